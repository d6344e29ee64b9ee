"""Canary and blue-green rollouts of a model's InferenceService, MLflow aliases moved in step.

    python -m pipelines.rollout status|start|step|switch|smoke|promote|rollback|pin <model> [...]

The KServe API used follows the ``serving.kserve.io/deploymentMode`` annotation: **Knative**
drives ``canaryTrafficPercent``, **Standard** (RawDeployment) drives ``spec.canary`` — one entry
named ``v<version>``, its own Deployment and Service, weighted by KServe's HTTPRoute. The safe
order of each command (what is patched first, what is waited for):

* ``start``: the new version (``--version`` or the ``challenger`` alias); the URI to return to is
  recorded in ``constructos.io/stable-model-uri``. Knative: one patch, new spec + share
  (``--percent``, default the ``constructos.io/canary-percent`` annotation); Knative routes only
  to a ready revision. Standard: (1) the entry at 0% (sized for its share, at least one pod),
  (2) wait until its Deployment serves the new URI with every replica ready (``--ready-timeout``;
  on timeout it stops with the reason, the canary never got traffic; ``rollback`` removes it,
  ``start`` again waits on), (3) the share.
* ``step --percent N``: Knative: the share. Standard, more traffic: resize the canary, wait until
  it is ready, then raise the share; less traffic: lower the share (at 0 it drains).
* ``promote``: ``champion`` -> the canary's version, ``challenger`` dropped. Knative: drop
  ``canaryTrafficPercent`` (the new revision takes all). Standard: (1) the stable predictor
  switches to the new URI, (2) wait until its Deployment has rolled out, (3) the canary's share to
  0, (4) drain: wait until no HTTPRoute weights it and the gateway accepted that, then ``--drain``
  seconds for in-flight requests, (5) remove the entry (KServe deletes its Deployment).
* ``rollback``: never more traffic to the canary. Knative: pin it at 0% (the previous revision
  takes everything), restore the previous spec still at 0%, wait until its revision is ready, then
  drop the field. Standard: (1) if a promote had switched the stable predictor, restore it and
  wait until rolled out, (2) the share to 0, (3) drain, (4) remove the entry. ``challenger`` dropped.
* ``--strategy blue-green``: ``start`` deploys the new version at 0% only (Standard: full-sized,
  on its own Service ``<isvc>-v<version>-predictor``; Knative: a 0% revision with a tag URL) and
  waits until it is ready; ``smoke`` runs the smoke test on that endpoint (``--smoke-url``
  overrides it); ``switch`` runs the smoke test, then moves 100% at once (the old version keeps
  running at 0%); ``rollback`` switches back (share to 0, drain, remove); ``promote`` retires
  the old version (as above: the stable predictor takes the new version first).
* ``pin``: serve exactly ``--version`` (default: the ``champion`` alias's version) without a canary,
  and point ``champion`` at it. Revisions always name a version, never the moving alias: a restarted
  pod of an old revision must not load a newer model.
* ``sync --overlay ENV``: write the live InferenceService's rollout state into the overlay (GitOps
  then applies what runs instead of a conflict).

Online, the InferenceService is patched through the Kubernetes API (JSON merge patches under the
field manager ``constructos-rollout`` that carry ``resourceVersion``: a concurrent change is a
conflict, which is re-read and re-planned up to ``--retries`` times; see :mod:`pipelines.rollout.cluster`
for who owns which field). Every command is a state machine: run again after a stop, it goes on
from the state it finds.
``--dry-run`` prints the patches, waits and alias moves and changes nothing. ``--overlay ENV`` works
offline (GitOps): it renders the overlay with kustomize and rewrites
``manifests/overlays/ENV/rollout/<model>.yaml`` one step at a time; commit and apply that instead.

``analyze`` compares the challenger with the champion (:mod:`pipelines.rollout.canary`) from Prometheus
(``--prometheus URL``) or the inference log on Kafka, and answers promote / rollback /
inconclusive with reasons (exit code 0 / 1 / 3). ``auto`` starts a canary if none runs and
climbs ``--ladder`` (10,25,50,100), analysing every ``--interval`` seconds; it promotes at the top,
and rolls back after ``--failure-limit`` failed analyses or ``--max-checks`` without a decision.
With ``--strategy blue-green`` its ladder is the switch: start, smoke test, switch, then the same
analyses and gates decide promote or rollback. A new version that never gets ready or fails the
smoke test is rolled back before it had any traffic.

The decisions are pure functions (``plan_*``: state in, target states out); everything that
talks to a cluster, MLflow or the file system is a thin shell around them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_specs import spec_names
from pipelines.rollout.aliases import read_aliases
from pipelines.rollout.cluster import Cluster
from pipelines.rollout.commands import Smoke, plan_for, run, status_lines, sync
from pipelines.rollout.overlay import Overlay, overlay_dir
from pipelines.rollout.state import (
    BLUE_GREEN,
    CANARY,
    CHALLENGER,
    CHAMPION,
    COMMANDS,
    NAMESPACE,
    STRATEGIES,
    RolloutError,
    Serving,
)
from pipelines.rollout.targets import RolloutTarget

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["auto", "main", "parse_args", "plan_for", "run", "status_lines", "sync"]


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.rollout", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("model", choices=spec_names(), help="model name, e.g. credit_risk")
    parser.add_argument("--percent", type=int, help="canary share of traffic (start, step)")
    parser.add_argument("--version", help="registry version to start (default: the challenger alias)")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--dry-run", action="store_true", help="print the patches and alias moves, change nothing")
    parser.add_argument("--overlay", help="offline (GitOps): edit this overlay (name or directory) instead")
    parser.add_argument("--offline", action="store_true", help="require --overlay; never touch a cluster")
    parser.add_argument("--manifests", type=Path, default=Path(__file__).resolve().parents[2] / "manifests")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI / settings)")
    parser.add_argument("--no-aliases", action="store_true", help="leave the MLflow aliases alone")
    parser.add_argument("--ready-timeout", type=float, default=600, metavar="S", help="wait for a revision (600)")
    parser.add_argument("--retries", type=int, default=3, help="re-plans after a resourceVersion conflict (3)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=CANARY, help="start / auto: canary or blue-green")
    parser.add_argument("--drain", type=float, default=5, metavar="S", help="in-flight pause after a share -> 0 (5)")
    parser.add_argument(
        "--smoke-url", metavar="URL", help="smoke / switch: the new version's endpoint (default: its own)"
    )
    canary = parser.add_argument_group("analyze / auto")
    canary.add_argument("--prometheus", metavar="URL", help="Prometheus HTTP API (default: the inference log on Kafka)")
    canary.add_argument("--window", type=int, default=600, metavar="S", help="seconds of traffic to analyse (600)")
    canary.add_argument("--min-rows", type=int, default=100, help="challenger rows needed for a decision (100)")
    canary.add_argument("--min-labels", type=int, default=100, help="labels per side before live accuracy decides")
    canary.add_argument("--ladder", default="10,25,50,100", help="canary shares to climb (auto)")
    canary.add_argument("--interval", type=float, default=300, metavar="S", help="seconds between analyses (auto)")
    canary.add_argument("--failure-limit", type=int, default=2, help="failed analyses before rolling back (auto)")
    canary.add_argument("--max-checks", type=int, default=20, help="analyses before giving up: rollback (auto)")
    args = parser.parse_args(argv)
    if (args.offline or args.command == "sync") and not args.overlay:
        parser.error(f"{'sync' if args.command == 'sync' else '--offline'} needs --overlay ENV")
    return args


def mlflow_client(tracking_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    from pipelines.settings import get_settings

    uri = tracking_uri or get_settings().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --- analyze / auto ------------------------------------------------------------------------


def gather_evidence(args: argparse.Namespace, aliases: dict[str, str | None]) -> Any:
    """The canary evidence for the aliased versions, from Prometheus or the inference log."""
    from feature_specs import load_spec
    from pipelines.rollout import evidence as canary_sources
    from pipelines.settings import get_settings

    spec = load_spec(args.model)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if args.prometheus:
        if not champion or not challenger:
            raise RolloutError(f"{args.model}: analysis from Prometheus needs both MLflow aliases")
        query = canary_sources.prometheus(args.prometheus)
        return canary_sources.evidence_from_prometheus(spec, query, champion, challenger, f"{args.window}s")
    return canary_sources.evidence_from_kafka(spec, get_settings(), champion, challenger, args.window)


def analysis(args: argparse.Namespace, client: Callable[[], MlflowClient]) -> Any:
    from feature_specs import load_spec
    from pipelines.rollout.canary import Policy, analyze

    aliases = {} if args.no_aliases else read_aliases(client(), args.model)
    policy = Policy(min_rows=args.min_rows, min_labels=args.min_labels)
    return analyze(load_spec(args.model), gather_evidence(args, aliases), policy)


def command(args: argparse.Namespace, name: str, percent: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "command": name, "percent": percent})


def auto(
    args: argparse.Namespace,
    where: RolloutTarget,
    client: Callable[[], MlflowClient],
    say: Callable[[str], None] = print,
    analyse: Callable[[], Any] | None = None,
    sleep: Callable[[float], None] | None = None,
    check: Smoke | None = None,
) -> str:
    """Climb the ladder (blue-green: switch) until promoted or rolled back; returns ``promote`` or
    ``rollback``. A new version that does not get ready (or fails the smoke test) is rolled back."""
    import time

    from pipelines.rollout.canary import next_step, parse_ladder

    analyse = analyse or (lambda: analysis(args, client))
    sleep = sleep or time.sleep
    state = Serving.from_isvc(where.get(args.model))
    blue_green = state.strategy == BLUE_GREEN if state.canary_running else args.strategy == BLUE_GREEN
    ladder = (100,) if blue_green else parse_ladder(args.ladder)
    try:
        if not state.canary_running:
            for line in run(command(args, "start", None if blue_green else ladder[0]), where, client):
                say(line)
        if blue_green and Serving.from_isvc(where.get(args.model)).canary_percent != 100:
            for line in run(command(args, "switch"), where, client, check):
                say(line)
    except RolloutError as e:
        say(f"stopped before any traffic reached the new version: {e}")
        finish(args, "rollback", where, client, say)
        return "rollback"
    failures = 0
    for check_no in range(1, args.max_checks + 1):
        sleep(args.interval)
        verdict = analyse()
        percent = Serving.from_isvc(where.get(args.model)).canary_percent
        step, failures = next_step(percent, verdict, failures, args.failure_limit, ladder)
        say(f"check {check_no}: {verdict.decision} -> {step.action} {step.percent or ''} ({step.reason})")
        for reason in verdict.reasons:
            say(f"  {reason}")
        if step.action == "step":
            for line in run(command(args, "step", step.percent), where, client):
                say(line)
        elif step.action in ("promote", "rollback"):
            finish(args, step.action, where, client, say)
            return step.action
    say(f"no decision after {args.max_checks} checks: rolling back")
    finish(args, "rollback", where, client, say)
    return "rollback"


def finish(
    args: argparse.Namespace,
    action: str,
    where: RolloutTarget,
    client: Callable[[], MlflowClient],
    say: Callable[[str], None],
) -> None:
    """Promote or roll back completely (GitOps applies a multi-step plan one step per call)."""
    while Serving.from_isvc(where.get(args.model)).canary_running:
        for line in run(command(args, action), where, client):
            say(line)
        if args.dry_run:
            break


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "analyze":
        try:
            verdict = analysis(args, lambda: mlflow_client(args.tracking_uri))
        except RolloutError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(verdict.lines()))
        return {"promote": 0, "rollback": 1}.get(verdict.decision, 3)
    try:
        if args.command == "sync":
            print("\n".join(sync(args)))
            return 0
        where: RolloutTarget
        where = Overlay(overlay_dir(args.overlay, args.manifests)) if args.overlay else Cluster(args.namespace)
        if args.command == "auto":
            outcome = auto(args, where, lambda: mlflow_client(args.tracking_uri))
            print(f"outcome: {outcome}")
            return 0 if outcome == "promote" else 1
        for line in run(args, where, lambda: mlflow_client(args.tracking_uri)):
            print(line)
    except RolloutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
