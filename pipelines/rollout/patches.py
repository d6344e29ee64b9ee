"""Patch bodies, pure: a live InferenceService and a target state in, the JSON merge patch (online)
or the kustomize JSON 6902 operations (a GitOps overlay) out."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pipelines.rollout.state import (
    STABLE_ANNOTATION,
    STORAGE_URI_ENV,
    STRATEGY_ANNOTATION,
    URI_ARG,
    Resource,
    Serving,
)


def with_uri(args: Sequence[str], uri: str) -> list[str]:
    """Container args with the model URI replaced (or appended)."""
    kept = [a for a in args if not str(a).startswith(URI_ARG)]
    index = next((i for i, a in enumerate(args) if str(a).startswith(URI_ARG)), len(kept))
    return [*kept[:index], URI_ARG + uri, *kept[index:]]


def container_with_uri(container: Resource, uri: str) -> Resource:
    """The container serving ``uri``: the ``--model_uri`` argument (and ``STORAGE_URI``, if set)."""
    out = copy.deepcopy(container)
    out["args"] = with_uri(out.get("args", []), uri)
    out["command"] = [c for c in out.get("command", []) if not str(c).startswith(URI_ARG)]
    for env in out.get("env") or []:
        if env.get("name") == STORAGE_URI_ENV:
            env["value"] = uri
    return out


def canary_entries(isvc: Resource, target: Serving) -> list[Resource] | None:
    """The ``spec.canary`` list for ``target`` (None: no canary). The entry carries the stable's
    containers with the canary's model URI (KServe merges it onto a copy of the stable predictor
    and replaces lists whole); an existing entry of the same name is kept and resized."""
    if target.canary_uri is None:
        return None
    live = (isvc["spec"].get("canary") or [None])[0]
    if live and (live.get("predictor") or {}).get("name") == target.canary_name:
        predictor = copy.deepcopy(live["predictor"])
    else:
        predictor = {"name": target.canary_name}
    containers = predictor.get("containers") or copy.deepcopy(isvc["spec"]["predictor"]["containers"])
    predictor["containers"] = [container_with_uri(containers[0], target.canary_uri), *containers[1:]]
    if target.canary_replicas is not None:
        predictor["minReplicas"] = target.canary_replicas
    return [{"trafficPercent": target.canary_percent or 0, "predictor": predictor}]


def _canary_fields(state: Serving) -> tuple[Any, ...]:
    return state.canary_uri, state.canary_name, state.canary_percent, state.canary_replicas


def merge_patch(isvc: Resource, target: Serving) -> Resource:
    """The JSON merge patch (RFC 7386) that takes a live InferenceService to ``target``."""
    current = Serving.from_isvc(isvc)
    meta: Resource = {}
    if rv := isvc.get("metadata", {}).get("resourceVersion"):
        meta["resourceVersion"] = rv  # optimistic lock: a concurrent writer makes this a 409
    annotations: Resource = {}
    if target.stable_uri != current.stable_uri:
        annotations[STABLE_ANNOTATION] = target.stable_uri
    if target.strategy != current.strategy:
        annotations[STRATEGY_ANNOTATION] = target.strategy
    if annotations:
        meta["annotations"] = annotations
    spec: Resource = {}
    predictor: Resource = {}
    if target.standard:
        if _canary_fields(target) != _canary_fields(current):
            spec["canary"] = canary_entries(isvc, target)  # an atomic list: written whole, null removes it
    elif target.canary_percent != current.canary_percent:
        predictor["canaryTrafficPercent"] = target.canary_percent
    if target.model_uri != current.model_uri:
        containers = copy.deepcopy(isvc["spec"]["predictor"]["containers"])  # lists are replaced whole
        containers[0] = container_with_uri(containers[0], target.model_uri)
        predictor["containers"] = containers
    if predictor:
        spec["predictor"] = predictor
    patch: Resource = {"metadata": meta} if meta else {}
    if spec:
        patch["spec"] = spec
    return patch


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def overlay_ops(isvc: Resource, target: Serving) -> list[Resource]:
    """Kustomize JSON 6902 operations that put ``target`` on top of the overlay's base."""
    container = isvc["spec"]["predictor"]["containers"][0]
    served = container_with_uri(container, target.model_uri)
    ops: list[Resource] = [{"op": "add", "path": "/spec/predictor/containers/0/args", "value": served["args"]}]
    if any(e.get("name") == STORAGE_URI_ENV for e in container.get("env") or []):
        ops.append({"op": "add", "path": "/spec/predictor/containers/0/env", "value": served["env"]})
    if target.standard:
        if (entries := canary_entries(isvc, target)) is not None:
            ops.append({"op": "add", "path": "/spec/canary", "value": entries})
    elif target.canary_percent is not None:
        ops.append({"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": target.canary_percent})
    for key, value in ((STABLE_ANNOTATION, target.stable_uri), (STRATEGY_ANNOTATION, target.strategy)):
        if value is not None:
            ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value})
    return ops
