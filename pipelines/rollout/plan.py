"""Rollout decisions and patch bodies, all pure: an InferenceService's state in, target states and
patches out. Everything that talks to a cluster, MLflow or files lives in the other modules."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE = "constructos-ml"
URI_ARG = "--model_uri="
STABLE_ANNOTATION = "constructos.io/stable-model-uri"
PERCENT_ANNOTATION = "constructos.io/canary-percent"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
CANARY_MODES = ("Knative", "Serverless")  # Serverless: KServe < 0.16's name of Knative mode
CHAMPION, CHALLENGER = "champion", "challenger"
COMMANDS = ("status", "start", "step", "promote", "rollback", "pin", "sync", "analyze", "auto")

Resource = dict[str, Any]


class RolloutError(Exception):
    """A rollout that cannot be done from the current state."""


def isvc_name(model: str) -> str:
    """credit_risk -> credit-risk (Kubernetes names take no underscores)."""
    return model.replace("_", "-")


def version_uri(model: str, version: str) -> str:
    return f"models:/{model}/{version}"


def uri_version(uri: str) -> str | None:
    """The registry version a ``models:/<name>/<version>`` URI pins (None for an alias)."""
    match = re.fullmatch(r"models:/[^/@]+/(\d+)", uri)
    return match.group(1) if match else None


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise RolloutError(f"canary percent {percent} is outside 0-100")
    return percent


# --- state and plans (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """The rollout-relevant slice of an InferenceService."""

    model_uri: str
    canary_percent: int | None = None
    """``canaryTrafficPercent``; None: the latest ready revision takes all traffic."""
    stable_uri: str | None = None
    """While a canary runs: the model URI that serves the rest of the traffic."""
    default_percent: int = 10
    """The canary share ``start`` uses when none is given (per model, set by the overlay)."""
    mode: str | None = "Knative"
    """KServe deployment mode (annotation): ``canaryTrafficPercent`` works only in Knative mode."""

    @property
    def canary_running(self) -> bool:
        return self.stable_uri is not None or self.canary_percent is not None

    @classmethod
    def from_isvc(cls, isvc: Resource) -> Serving:
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        predictor = isvc["spec"]["predictor"]
        return cls(
            model_uri=model_uri_of(predictor["containers"][0]),
            canary_percent=predictor.get("canaryTrafficPercent"),
            stable_uri=annotations.get(STABLE_ANNOTATION),
            default_percent=int(annotations.get(PERCENT_ANNOTATION, 10)),
            mode=annotations.get(MODE_ANNOTATION),
        )


@dataclass(frozen=True)
class Step:
    target: Serving
    wait_ready: bool = False
    """Wait until the KServe controller reports the revision of ``target`` ready before going on."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    """Target states, applied one after the other."""
    aliases: dict[str, str | None] = field(default_factory=dict)
    """MLflow alias -> version to point it at; None drops the alias."""


def model_uri_of(container: Resource) -> str:
    for arg in [*container.get("command", []), *container.get("args", [])]:
        if str(arg).startswith(URI_ARG):
            return str(arg)[len(URI_ARG) :]
    raise RolloutError(f"container {container.get('name')!r} has no {URI_ARG} argument")


def plan_start(model: str, current: Serving, version: str, percent: int | None = None) -> Plan:
    if current.canary_running:
        raise RolloutError(f"{model}: a canary of {current.model_uri} is running; promote or roll back first")
    if current.mode not in CANARY_MODES:
        raise RolloutError(f"{model}: deployment mode {current.mode!r} ignores canaryTrafficPercent; use Knative")
    if uri_version(current.model_uri) is None:
        raise RolloutError(
            f"{model}: the stable revision serves {current.model_uri}, a moving alias; `pin` a version first"
        )
    uri = version_uri(model, version)
    if uri == current.model_uri:
        raise RolloutError(f"{model}: {uri} is already serving")
    share = check_percent(current.default_percent if percent is None else percent)
    target = replace(current, model_uri=uri, canary_percent=share, stable_uri=current.model_uri)
    return Plan((Step(target),), {CHALLENGER: version})


def plan_step(model: str, current: Serving, percent: int) -> Plan:
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; `start` one first")
    return Plan((Step(replace(current, canary_percent=check_percent(percent))),))


def plan_promote(model: str, current: Serving) -> Plan:
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to promote")
    version = uri_version(current.model_uri)
    if version is None:
        raise RolloutError(f"{model}: the canary {current.model_uri} pins no registry version")
    target = replace(current, canary_percent=None, stable_uri=None)
    return Plan((Step(target),), {CHAMPION: version, CHALLENGER: None})


def plan_rollback(model: str, current: Serving, champion: str | None = None) -> Plan:
    """Never all traffic to the canary: pin it at 0% (the previous revision takes everything),
    restore the previous spec (still at 0%: a new revision that gets no traffic yet), wait until
    that revision is ready, and only then drop the canary field. Dropping it earlier would route
    everything to the latest *ready* revision: the canary. Re-running continues where it stopped."""
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to roll back")
    # A canary started without this tool has no recorded stable URI: the champion's version is.
    stable = current.stable_uri or (version_uri(model, champion) if champion else None)
    if stable is None or uri_version(stable) is None:
        raise RolloutError(f"{model}: no pinned version to return to (stable {stable!r}); `pin` one instead")
    restoring = replace(current, model_uri=stable, canary_percent=0, stable_uri=stable)
    steps = (
        [] if current.canary_percent == 0 or current.model_uri == stable else [Step(replace(current, canary_percent=0))]
    )
    steps += [Step(restoring, wait_ready=True), Step(replace(restoring, canary_percent=None, stable_uri=None))]
    return Plan(tuple(steps), {CHALLENGER: None})


def plan_pin(model: str, current: Serving, version: str) -> Plan:
    """Serve exactly ``version`` (no canary): a first champion, or an alias replaced by a version."""
    if current.canary_running:
        raise RolloutError(f"{model}: a canary of {current.model_uri} is running; promote or roll back first")
    return Plan((Step(replace(current, model_uri=version_uri(model, version))),), {CHAMPION: version})


def revision_ready(isvc: Resource) -> bool:
    """The controller has seen the current spec and its newest predictor revision is ready."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    seen = int(status.get("observedGeneration") or 0) >= int(isvc.get("metadata", {}).get("generation") or 0)
    created = predictor.get("latestCreatedRevision")
    return seen and bool(created) and predictor.get("latestReadyRevision") == created


# --- patch bodies (pure) --------------------------------------------------------------------


def with_uri(args: Sequence[str], uri: str) -> list[str]:
    """Container args with the model URI replaced (or appended)."""
    kept = [a for a in args if not str(a).startswith(URI_ARG)]
    index = next((i for i, a in enumerate(args) if str(a).startswith(URI_ARG)), len(kept))
    return [*kept[:index], URI_ARG + uri, *kept[index:]]


def merge_patch(isvc: Resource, target: Serving) -> Resource:
    """The JSON merge patch (RFC 7386) that takes a live InferenceService to ``target``."""
    current = Serving.from_isvc(isvc)
    meta: Resource = {}
    if rv := isvc.get("metadata", {}).get("resourceVersion"):
        meta["resourceVersion"] = rv  # optimistic lock: a concurrent writer makes this a 409
    if target.stable_uri != current.stable_uri:
        meta["annotations"] = {STABLE_ANNOTATION: target.stable_uri}
    predictor: Resource = {}
    if target.canary_percent != current.canary_percent:
        predictor["canaryTrafficPercent"] = target.canary_percent
    if target.model_uri != current.model_uri:
        containers = copy.deepcopy(isvc["spec"]["predictor"]["containers"])  # lists are replaced whole
        containers[0]["args"] = with_uri(containers[0].get("args", []), target.model_uri)
        containers[0]["command"] = [c for c in containers[0].get("command", []) if not str(c).startswith(URI_ARG)]
        predictor["containers"] = containers
    patch: Resource = {"metadata": meta} if meta else {}
    if predictor:
        patch["spec"] = {"predictor": predictor}
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


def overlay_ops(isvc: Resource, target: Serving) -> list[Resource]:
    """Kustomize JSON 6902 operations that put ``target`` on top of the overlay's base."""
    args = isvc["spec"]["predictor"]["containers"][0].get("args", [])
    ops: list[Resource] = [
        {"op": "add", "path": "/spec/predictor/containers/0/args", "value": with_uri(args, target.model_uri)}
    ]
    if target.canary_percent is not None:
        ops.append({"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": target.canary_percent})
    if target.stable_uri is not None:
        key = STABLE_ANNOTATION.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": target.stable_uri})
    return ops
