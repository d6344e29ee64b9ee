"""Rollout decisions and patch bodies, all pure: an InferenceService's state in, target states and
patches out. Everything that talks to a cluster, MLflow or files lives in the other modules.

Two KServe APIs carry a canary, chosen by the ``serving.kserve.io/deploymentMode`` annotation:

* **Knative** (``Serverless`` before KServe 0.16): ``spec.predictor.canaryTrafficPercent``. The
  spec names the new version; Knative splits between its latest ready revision and the last
  rolled-out one, whose model URI we remember in ``constructos.io/stable-model-uri``.
* **Standard** (``RawDeployment`` before 0.16; KServe >= 0.20): ``spec.canary``, a list of named
  predictors with ``trafficPercent``. Each entry becomes its own Deployment and Service
  (``<isvc>-<name>-predictor``), while ``spec.predictor`` keeps the stable version; the gateway's
  HTTPRoute weights the two Services. We manage one entry, named ``v<version>``.

Blue-green is the same machinery with two shares only: the new version at 0% (reachable on its
own Service or revision URL for a smoke test), then 100% at once (``switch``), the old one kept
running until ``promote`` retires it or ``rollback`` switches back.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE = "constructos-ml"
URI_ARG = "--model_uri="
STORAGE_URI_ENV = "STORAGE_URI"  # KServe's storage URI of a custom container, kept equal to --model_uri
STABLE_ANNOTATION = "constructos.io/stable-model-uri"
PERCENT_ANNOTATION = "constructos.io/canary-percent"
STRATEGY_ANNOTATION = "constructos.io/rollout-strategy"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
CANARY_MODES = ("Knative", "Serverless")  # Serverless: KServe < 0.16's name of Knative mode
STANDARD_MODES = ("Standard", "RawDeployment")  # RawDeployment: < 0.16's name (KServe's webhook rewrites it)
CHAMPION, CHALLENGER = "champion", "challenger"
CANARY, BLUE_GREEN = "canary", "blue-green"
STRATEGIES = (CANARY, BLUE_GREEN)
COMMANDS = ("status", "start", "step", "switch", "smoke", "promote", "rollback", "pin", "sync", "analyze", "auto")

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


def is_standard(mode: str | None) -> bool:
    return mode in STANDARD_MODES


def predictor_service(isvc: str, name: str | None = None) -> str:
    """KServe's Deployment/Service name of a predictor (``constants.PredictorServiceName``)."""
    return f"{isvc}-{name}-predictor" if name else f"{isvc}-predictor"


# --- state and plans (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """The rollout-relevant slice of an InferenceService."""

    model_uri: str
    """Knative: the spec's model URI (during a canary: the canary's). Standard: the stable predictor's."""
    canary_percent: int | None = None
    """Knative: ``canaryTrafficPercent``; Standard: the ``spec.canary`` entry's ``trafficPercent``.
    None: no canary share (Knative: the latest ready revision takes all traffic)."""
    stable_uri: str | None = None
    """While a rollout runs: the model URI it returns to on rollback (annotation)."""
    default_percent: int = 10
    """The canary share ``start`` uses when none is given (per model, set by the overlay)."""
    mode: str | None = "Knative"
    """KServe deployment mode (annotation): Knative reads ``canaryTrafficPercent``, Standard ``spec.canary``."""
    canary_uri: str | None = None
    """Standard: the model URI of the ``spec.canary`` entry (None: no entry)."""
    canary_name: str | None = None
    """Standard: the entry's ``predictor.name`` (its Deployment is ``<isvc>-<name>-predictor``)."""
    canary_replicas: int | None = None
    """Standard: the entry's fixed ``minReplicas`` (KServe gives a canary no autoscaler)."""
    strategy: str | None = None
    """``blue-green`` while a blue-green rollout runs (annotation); None for a canary or nothing."""
    min_replicas: int = field(default=1, compare=False)
    """The stable predictor's ``minReplicas`` (context for the canary's size, never changed here)."""

    @property
    def standard(self) -> bool:
        return is_standard(self.mode)

    @property
    def canary_running(self) -> bool:
        if self.standard:
            return self.canary_uri is not None or self.stable_uri is not None
        return self.stable_uri is not None or self.canary_percent is not None

    @property
    def challenger_uri(self) -> str | None:
        """The version on trial (None: no rollout runs)."""
        if not self.canary_running:
            return None
        return self.canary_uri if self.standard else self.model_uri

    @classmethod
    def from_isvc(cls, isvc: Resource) -> Serving:
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        spec = isvc["spec"]
        predictor = spec["predictor"]
        mode = annotations.get(MODE_ANNOTATION)
        state = cls(
            model_uri=model_uri_of(predictor["containers"][0]),
            canary_percent=None if is_standard(mode) else predictor.get("canaryTrafficPercent"),
            stable_uri=annotations.get(STABLE_ANNOTATION),
            default_percent=int(annotations.get(PERCENT_ANNOTATION, 10)),
            mode=mode,
            strategy=annotations.get(STRATEGY_ANNOTATION),
            min_replicas=int(predictor.get("minReplicas", 1)),
        )
        entries = spec.get("canary") or []
        if not is_standard(mode) or not entries:
            return state
        if len(entries) > 1:
            names = [e.get("predictor", {}).get("name") for e in entries]
            raise RolloutError(f"{isvc['metadata'].get('name')}: {len(entries)} canaries {names}; this tool runs one")
        entry = entries[0]
        canary = entry.get("predictor") or {}
        containers = canary.get("containers") or predictor["containers"]  # KServe merges the entry onto the stable
        return replace(
            state,
            canary_uri=model_uri_of(containers[0]),
            canary_name=canary.get("name"),
            canary_percent=int(entry.get("trafficPercent", 0)),
            canary_replicas=canary.get("minReplicas"),
        )


@dataclass(frozen=True)
class Step:
    target: Serving
    wait_ready: bool = False
    """After the patch, wait until the controller serves ``target``'s stable side: Knative, its
    newest revision is ready; Standard, the stable predictor's Deployment runs ``model_uri``, rolled out."""
    wait_canary: bool = False
    """Standard: after the patch, wait until the canary's Deployment runs ``canary_uri`` and is ready."""
    drain: bool = False
    """After the patch, wait until the gateway has taken the canary's share away (its HTTPRoutes
    accepted the new weights) and in-flight requests had time to finish."""


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


def canary_name(uri: str) -> str:
    """``models:/m/4`` -> ``v4``: the canary's predictor name (DNS label, KServe's pattern)."""
    version = uri_version(uri)
    if version is None:
        raise RolloutError(f"{uri} pins no registry version")
    return f"v{version}"


def canary_replicas(min_replicas: int, percent: int, strategy: str | None) -> int:
    """A canary's fixed size: its share of the stable's replicas (at least one pod, so it can be
    made ready before it gets traffic); blue-green's new side is full-sized. KServe refuses more
    than the stable's ``minReplicas``."""
    if strategy == BLUE_GREEN:
        return min_replicas
    return min(min_replicas, max(1, math.ceil(min_replicas * percent / 100)))


def _cleared(state: Serving) -> Serving:
    return replace(
        state,
        canary_percent=None,
        stable_uri=None,
        canary_uri=None,
        canary_name=None,
        canary_replicas=None,
        strategy=None,
    )


def _check_can_start(model: str, current: Serving, uri: str) -> None:
    if current.canary_running:
        raise RolloutError(f"{model}: a rollout of {current.challenger_uri} is running; promote or roll back first")
    if not current.standard and current.mode not in CANARY_MODES:
        raise RolloutError(
            f"{model}: deployment mode {current.mode!r}: set the {MODE_ANNOTATION} annotation to Knative "
            "(canaryTrafficPercent) or Standard (spec.canary); no mode reads a canary otherwise"
        )
    if uri_version(current.model_uri) is None:
        raise RolloutError(
            f"{model}: the stable revision serves {current.model_uri}, a moving alias; `pin` a version first"
        )
    if uri == current.model_uri:
        raise RolloutError(f"{model}: {uri} is already serving")


def plan_start(model: str, current: Serving, version: str, percent: int | None = None, strategy: str = CANARY) -> Plan:
    """Knative canary: one patch (new spec + share; Knative itself routes only to a ready revision).
    Standard canary: the entry at 0% first, wait until its Deployment is ready, then the share —
    a canary that never gets ready never gets traffic. Blue-green: the new version at 0%, waited
    for; traffic moves with ``switch``. A Standard start that stopped waiting is resumed by
    running it again."""
    uri = version_uri(model, version)
    if strategy not in STRATEGIES:
        raise RolloutError(f"strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    share = 0 if strategy == BLUE_GREEN else check_percent(current.default_percent if percent is None else percent)
    marker = BLUE_GREEN if strategy == BLUE_GREEN else None
    resuming = current.standard and current.canary_uri == uri and current.canary_percent == 0
    if resuming and current.strategy == marker:
        dark = current
    else:
        _check_can_start(model, current, uri)
        if not current.standard:
            stable = current.model_uri
            target = replace(current, model_uri=uri, canary_percent=share, stable_uri=stable, strategy=marker)
            return Plan((Step(target, wait_ready=strategy == BLUE_GREEN),), {CHALLENGER: version})
        if current.min_replicas < 1:
            raise RolloutError(
                f"{model}: the stable predictor has minReplicas {current.min_replicas}; a Standard-mode canary "
                "needs at least 1 (KServe sizes it from the stable's and allows no more)"
            )
        dark = replace(
            current,
            canary_uri=uri,
            canary_name=canary_name(uri),
            canary_percent=0,
            canary_replicas=canary_replicas(current.min_replicas, share, strategy),
            stable_uri=current.model_uri,
            strategy=marker,
        )
    steps = [Step(dark, wait_canary=True)]
    if share:
        steps.append(Step(replace(dark, canary_percent=share)))
    return Plan(tuple(steps), {CHALLENGER: version})


def plan_step(model: str, current: Serving, percent: int) -> Plan:
    """Standard: more traffic only to a ready canary — resize it first (if its share of replicas
    grows) and wait until it is ready, then raise the share; less traffic: the share first."""
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; `start` one first")
    if current.strategy == BLUE_GREEN:
        raise RolloutError(f"{model}: a blue-green rollout moves traffic with `switch`, not `step`")
    check_percent(percent)
    if not current.standard:
        return Plan((Step(replace(current, canary_percent=percent)),))
    replicas = canary_replicas(current.min_replicas, percent, current.strategy)
    if percent > (current.canary_percent or 0):
        sized = replace(current, canary_replicas=replicas)
        return Plan((Step(sized, wait_canary=True), Step(replace(sized, canary_percent=percent))))
    return Plan((Step(replace(current, canary_percent=percent, canary_replicas=replicas), drain=percent == 0),))


def plan_switch(model: str, current: Serving) -> Plan:
    """Blue-green: all traffic to the new version at once (the caller has run the smoke test).
    The old version keeps running (Knative: the previous revision at 0%; Standard: the stable
    predictor at weight 0), so ``rollback`` switches back at once."""
    if not current.canary_running:
        raise RolloutError(f"{model}: no blue-green rollout is running; `start --strategy blue-green` first")
    if current.strategy != BLUE_GREEN:
        raise RolloutError(f"{model}: a canary climbs with `step`; `switch` is for blue-green rollouts")
    target = replace(current, canary_percent=100)
    if not current.standard:
        return Plan((Step(current, wait_ready=True), Step(target)))
    return Plan((Step(current, wait_canary=True), Step(target)))


def plan_promote(model: str, current: Serving) -> Plan:
    """Knative: drop ``canaryTrafficPercent`` (the canary's revision takes all traffic).
    Standard: switch the stable predictor to the canary's version and wait until its Deployment
    has rolled out; then take the canary's share away and let it drain; then remove the entry
    (KServe deletes its Deployment). Traffic never meets a predictor that is not ready."""
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to promote")
    uri = current.challenger_uri or ""
    version = uri_version(uri)
    if version is None:
        raise RolloutError(f"{model}: the canary {uri} pins no registry version")
    promoting = current.standard and current.model_uri == uri  # a promote that stopped half-way
    if current.strategy == BLUE_GREEN and current.canary_percent != 100 and not promoting:
        raise RolloutError(f"{model}: `switch` first: a blue-green version takes traffic only after its smoke test")
    aliases: dict[str, str | None] = {CHAMPION: version, CHALLENGER: None}
    if not current.standard:
        return Plan((Step(_cleared(current)),), aliases)
    state = replace(current, model_uri=uri)
    steps = [Step(state, wait_ready=True)]  # also when already switched: a re-run waits for it again
    state = replace(state, canary_percent=0)
    steps += [Step(state, drain=True), Step(_cleared(state))]  # drained again on a re-run: cheap, and safe
    return Plan(tuple(steps), aliases)


def plan_rollback(model: str, current: Serving, champion: str | None = None) -> Plan:
    """Never all traffic to the canary.

    Knative: pin it at 0% (the previous revision takes everything), restore the previous spec
    (still at 0%: a new revision that gets no traffic yet), wait until that revision is ready,
    and only then drop the canary field. Dropping it earlier would route everything to the latest
    *ready* revision: the canary.

    Standard: the stable predictor must serve the previous version, rolled out (restore it first
    if a promotion had already switched it); then take the canary's share to 0 and let it drain;
    then remove the entry.

    Re-running continues where it stopped."""
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to roll back")
    # A canary started without this tool has no recorded stable URI: the champion's version is.
    stable = current.stable_uri or (version_uri(model, champion) if champion else None)
    if stable is None and current.standard and current.model_uri != current.canary_uri:
        stable = current.model_uri  # Standard: the stable predictor still serves it
    if stable is None or uri_version(stable) is None:
        raise RolloutError(f"{model}: no pinned version to return to (stable {stable!r}); `pin` one instead")
    if current.standard:
        state = replace(current, model_uri=stable)
        steps = [Step(state, wait_ready=True)]  # the stable takes everything: it must be ready first
        state = replace(state, canary_percent=0)
        steps += [Step(state, drain=True), Step(_cleared(state))]
        return Plan(tuple(steps), {CHALLENGER: None})
    restoring = replace(current, model_uri=stable, canary_percent=0, stable_uri=stable)
    pinned = current.canary_percent == 0 or current.model_uri == stable
    first = [] if pinned else [Step(replace(current, canary_percent=0))]
    steps = [*first, Step(restoring, wait_ready=True), Step(_cleared(restoring))]
    return Plan(tuple(steps), {CHALLENGER: None})


def plan_pin(model: str, current: Serving, version: str) -> Plan:
    """Serve exactly ``version`` (no canary): a first champion, or an alias replaced by a version."""
    if current.canary_running:
        raise RolloutError(f"{model}: a canary of {current.challenger_uri} is running; promote or roll back first")
    return Plan((Step(replace(current, model_uri=version_uri(model, version))),), {CHAMPION: version})


# --- is it ready? (pure: the objects in, the reason it is not ready out) ----------------------


def revision_ready(isvc: Resource) -> bool:
    """Knative: the controller has seen the current spec and its newest predictor revision is ready."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    seen = int(status.get("observedGeneration") or 0) >= int(isvc.get("metadata", {}).get("generation") or 0)
    created = predictor.get("latestCreatedRevision")
    return seen and bool(created) and predictor.get("latestReadyRevision") == created


def deployment_problem(deployment: Resource | None, name: str, uri: str) -> str | None:
    """Why the Deployment ``name`` does not yet serve ``uri`` with every replica ready and no old
    pod left (``kubectl rollout status``); None when it does. KServe's status cannot tell: in
    Standard mode it reports a predictor ready while a rolling update still runs old pods."""
    if deployment is None:
        return f"Deployment {name} does not exist yet"
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    try:
        running = model_uri_of(containers[0]) if containers else "no container"
    except RolloutError:
        running = "no model URI"
    if running != uri:
        return f"Deployment {name} runs {running}, not yet {uri}"
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(deployment.get("metadata", {}).get("generation") or 0):
        return f"Deployment {name}: its controller has not seen the latest spec"
    counts = {k: int(status.get(k) or 0) for k in ("replicas", "updatedReplicas", "availableReplicas")}
    if counts["updatedReplicas"] >= wanted and counts["replicas"] <= wanted and counts["availableReplicas"] >= wanted:
        return None if wanted > 0 else f"Deployment {name} has 0 replicas"
    why = [
        f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
        for c in status.get("conditions") or []
        if (c.get("type") in ("Available", "Progressing") and c.get("status") != "True")
        or (c.get("type") == "ReplicaFailure" and c.get("status") == "True")
        or c.get("reason") == "ProgressDeadlineExceeded"
    ]
    return (
        f"Deployment {name}: {counts['availableReplicas']}/{wanted} replicas available, "
        f"{counts['updatedReplicas']} updated, {counts['replicas']} in all" + (f" ({'; '.join(why)})" if why else "")
    )


def canary_status_problem(isvc: Resource, name: str) -> str | None:
    """What KServe reports for the canary ``name`` (``status.canaryStatuses``: its HTTPRoute weights
    only ready canaries, since kserve#5984); None when it reports it ready."""
    for entry in (isvc.get("status") or {}).get("canaryStatuses") or []:
        if entry.get("name") == name:
            return None if entry.get("ready") else f"KServe reports canary {name} not ready"
    return f"KServe has not reported canary {name} yet"


def standard_problem(
    isvc: Resource, deployments: dict[str, Resource | None], target: Serving, *, stable: bool, canary: bool
) -> str | None:
    """Standard mode: why ``target`` is not yet served (the stable side, the canary side, or both)."""
    name = isvc["metadata"]["name"]
    problems = []
    if stable:
        dep = predictor_service(name, isvc["spec"]["predictor"].get("name"))
        problems.append(deployment_problem(deployments.get(dep), dep, target.model_uri))
    if canary and target.canary_uri and target.canary_name:
        dep = predictor_service(name, target.canary_name)
        problems.append(deployment_problem(deployments.get(dep), dep, target.canary_uri))
        problems.append(canary_status_problem(isvc, target.canary_name))
    found = [p for p in problems if p]
    return "; ".join(found) if found else None


def pod_problems(pods: Sequence[Resource]) -> list[str]:
    """Why a predictor's pods are not ready, as the kubelet says (waiting reasons, failed probes)."""
    out = []
    for pod in pods:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            if c.get("ready"):
                continue
            state = c.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, (c.get("lastState") or {}).get("terminated") or {}
            probe = "running, readiness probe failing" if "running" in state else "not ready"
            detail = waiting.get("reason") or probe
            if terminated.get("reason"):
                detail += f" (last exit: {terminated['reason']})"
            out.append(f"pod {pod['metadata']['name']} container {c.get('name')}: {detail}")
    return out


def route_problem(routes: Sequence[Resource], service: str) -> str | None:
    """Why the gateway may still send traffic to ``service``: an HTTPRoute gives it weight, or the
    gateway has not yet accepted the route's latest generation. None: drained."""
    for route in routes:
        name = route["metadata"]["name"]
        for rule in route.get("spec", {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("name") == service and int(ref.get("weight", 1)) > 0:
                    return f"HTTPRoute {name} still sends weight {ref.get('weight', 1)} to {service}"
        generation = int(route["metadata"].get("generation") or 0)
        for parent in (route.get("status") or {}).get("parents") or []:
            accepted = [c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"]
            seen = [int(c["observedGeneration"]) for c in accepted if c.get("observedGeneration") is not None]
            if seen and seen[0] < generation:  # a gateway that reports no generation cannot be waited for
                return f"the gateway has not yet accepted generation {generation} of HTTPRoute {name}"
    return None


# --- patch bodies (pure) --------------------------------------------------------------------


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
