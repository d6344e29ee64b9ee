"""Rollout decisions, all pure: the current :class:`~pipelines.rollout.state.Serving` in, the
target states to apply one after the other (and the MLflow aliases to move) out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from pipelines.rollout.state import (
    BLUE_GREEN,
    CANARY,
    CANARY_MODES,
    CHALLENGER,
    CHAMPION,
    MODE_ANNOTATION,
    STRATEGIES,
    RolloutError,
    Serving,
    check_percent,
    uri_version,
    version_uri,
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
