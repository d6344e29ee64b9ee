"""Carrying out one rollout command on a target (cluster or overlay): plan from the current state,
move the MLflow aliases, apply the steps (waiting where a step says so), and re-plan from the
fresh state after a ``resourceVersion`` conflict. :mod:`pipelines.rollout.cli` is the command line.

``switch`` (blue-green) runs the smoke test against the new version's own endpoint first and
changes nothing when it fails."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.rollout.aliases import move_aliases, read_aliases
from pipelines.rollout.cluster import Cluster, Conflict
from pipelines.rollout.overlay import Overlay, overlay_dir
from pipelines.rollout.patches import apply_merge_patch, merge_patch
from pipelines.rollout.plan import (
    Plan,
    Step,
    plan_pin,
    plan_promote,
    plan_rollback,
    plan_start,
    plan_step,
    plan_switch,
)
from pipelines.rollout.state import (
    CHALLENGER,
    CHAMPION,
    MODE_ANNOTATION,
    Resource,
    RolloutError,
    Serving,
    isvc_name,
    predictor_service,
    uri_version,
)
from pipelines.rollout.targets import RolloutTarget

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from feature_specs.spec import FeatureSpec

Smoke = Callable[[str, "FeatureSpec", "str | None"], list[str]]
"""A smoke test: (the new version's URL, its spec, its version) -> the problems found."""


def plan_for(args: argparse.Namespace, current: Serving, aliases: Callable[[], dict[str, str | None]]) -> Plan:
    if args.command == "start":
        version = args.version or aliases().get(CHALLENGER)
        if not version:
            raise RolloutError(f"{args.model}: no --version given and no `{CHALLENGER}` alias in MLflow")
        return plan_start(args.model, current, version, args.percent, args.strategy)
    if args.command == "step":
        if args.percent is None:
            raise RolloutError("step needs --percent")
        return plan_step(args.model, current, args.percent)
    if args.command == "switch":
        return plan_switch(args.model, current)
    if args.command == "promote":
        return plan_promote(args.model, current)
    if args.command == "pin":
        version = args.version or aliases().get(CHAMPION)
        if not version:
            raise RolloutError(f"{args.model}: no --version given and no `{CHAMPION}` alias in MLflow")
        return plan_pin(args.model, current, version)
    champion = None if current.stable_uri or args.no_aliases else aliases().get(CHAMPION)
    return plan_rollback(args.model, current, champion)


def status_lines(model: str, isvc: Resource, aliases: dict[str, str | None] | None) -> list[str]:
    state = Serving.from_isvc(isvc)
    share = "none" if state.canary_percent is None else f"{state.canary_percent}%"
    lines = [
        f"model:          {model} (InferenceService {isvc_name(model)})",
        f"deploymentMode: {isvc['metadata'].get('annotations', {}).get(MODE_ANNOTATION)}",
        f"model_uri:      {state.model_uri}",
        f"canary:         {share}",
        f"stable_uri:     {state.stable_uri or '-'}",
        f"default canary: {state.default_percent}%",
    ]
    if state.strategy:
        lines.append(f"strategy:       {state.strategy}")
    if state.canary_uri:
        deployment = predictor_service(isvc_name(model), state.canary_name)
        lines.append(
            f"canary entry:   {state.canary_name} -> {state.canary_uri}, "
            f"{state.canary_replicas} replica(s), Deployment {deployment}"
        )
    if aliases is not None:
        lines += [f"alias {name}: {version or '-'}" for name, version in aliases.items()]
    status = isvc.get("status") or {}
    traffic = (status.get("components") or {}).get("predictor", {}).get("traffic") or []
    lines += [f"traffic:        {t.get('percent')}% -> {t.get('revisionName')}" for t in traffic]
    lines += [
        f"canary status:  {c.get('name')} ready={c.get('ready')} trafficPercent={c.get('trafficPercent')}"
        for c in status.get("canaryStatuses") or []
    ]
    return lines


def smoke(args: argparse.Namespace, where: RolloutTarget, check: Smoke | None = None) -> list[str]:
    """The smoke test of the new version on its own endpoint; raises with the problems found."""
    from feature_specs import load_spec
    from pipelines.rollout.smoke import smoke_test

    state = Serving.from_isvc(where.get(args.model))
    if not state.canary_running or state.challenger_uri is None:
        raise RolloutError(f"{args.model}: no new version is deployed; `start` one first")
    url = args.smoke_url or where.smoke_url(args.model)
    version = uri_version(state.challenger_uri)
    problems = (check or smoke_test)(url, load_spec(args.model), version)
    if problems:
        raise RolloutError(f"{args.model}: smoke test of {state.challenger_uri} at {url} failed: {'; '.join(problems)}")
    return [f"smoke test passed: {url} answers as version {version}"]


def waits(step: Step) -> list[str]:
    """What a step waits for, in words (dry runs)."""
    target, out = step.target, []
    if step.wait_ready:
        out.append(
            f"wait until the stable predictor's Deployment serves {target.model_uri}, rolled out"
            if target.standard
            else "wait until the new revision is ready"
        )
    if step.wait_canary:
        out.append(f"wait until canary {target.canary_name}'s Deployment serves {target.canary_uri}, ready")
    if step.drain:
        out.append("wait until no HTTPRoute weights the canary, then --drain seconds for in-flight requests")
    return out


def run(
    args: argparse.Namespace, where: RolloutTarget, client: Callable[[], MlflowClient], check: Smoke | None = None
) -> list[str]:
    """Carry out one command; returns what it did (or would do, with --dry-run)."""
    isvc = where.get(args.model)
    if args.command == "status":
        aliases = None if args.no_aliases else read_aliases(client(), args.model)
        return status_lines(args.model, isvc, aliases)
    if args.command == "smoke":
        return smoke(args, where, check)

    def plan_now(isvc: Resource) -> Plan:
        return plan_for(args, Serving.from_isvc(isvc), lambda: read_aliases(client(), args.model))

    plan = plan_now(isvc)
    out: list[str] = []
    if args.dry_run:
        out += [f"alias {a} -> {v or '(drop)'}" for a, v in plan.aliases.items() if not args.no_aliases]
        out += ["run the smoke test on the new version's own endpoint"] if args.command == "switch" else []
        for step in plan.steps:
            if step.target != Serving.from_isvc(isvc):
                out.append(where.describe(args.model, isvc, step.target))
                isvc = apply_merge_patch(isvc, merge_patch(isvc, step.target))
            out += waits(step)
        return out
    if args.command == "switch":  # the new version must answer on its own before it takes everything
        out += smoke(args, where, check)
    # Aliases first: every command is then safe to re-run if a patch fails.
    if plan.aliases and not args.no_aliases:
        move_aliases(client(), args.model, plan.aliases)
        out += [f"alias {a} -> {v or '(dropped)'}" for a, v in plan.aliases.items()]
    for attempt in range(args.retries + 1):
        try:
            return out + apply_steps(args, where, isvc, plan)
        except Conflict as e:
            if attempt == args.retries:
                raise RolloutError(f"{e}; gave up after {attempt + 1} attempts: check who else writes it") from e
            out.append(f"conflict: {e}; re-reading and re-planning")
            isvc = where.get(args.model)
            plan = plan_now(isvc)  # the plans are state machines: from the new state, what is left
    raise AssertionError("unreachable")


def apply_steps(args: argparse.Namespace, where: RolloutTarget, isvc: Resource, plan: Plan) -> list[str]:
    out: list[str] = []
    steps = plan.steps
    if isinstance(where, Overlay):  # GitOps: each step is its own commit and apply; nothing to wait for
        steps = tuple(s for s in steps if s.target != Serving.from_isvc(isvc))[:1]
        if len(plan.steps) > 1:
            out.append(f"one step of {args.command}: apply this, then run `{args.command}` again")
    for i, step in enumerate(steps):
        if i:
            isvc = where.get(args.model)  # fresh resourceVersion for the next patch
        if step.target != Serving.from_isvc(isvc):
            out.append(where.apply(args.model, isvc, step.target))
        out += where.wait(args.model, step, args.ready_timeout)
        out += where.drain(args.model, step, args.drain, args.ready_timeout)
    return out


def sync(args: argparse.Namespace) -> list[str]:
    """The live rollout state, written into the overlay GitOps applies."""
    live = Serving.from_isvc(Cluster(args.namespace).get(args.model))
    overlay = Overlay(overlay_dir(args.overlay, args.manifests))
    return [overlay.apply(args.model, overlay.get(args.model), live)]
