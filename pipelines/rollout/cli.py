"""Canary rollouts of a model's InferenceService, with the MLflow aliases moved in step.

    python -m pipelines.rollout status|start|step|promote|rollback <model> [--percent N]

* ``start``: the new version (``--version`` or the ``challenger`` alias) gets a canary share
  (``--percent``, default: the ISVC's ``constructos.io/canary-percent`` annotation); the
  URI to return to is recorded in ``constructos.io/stable-model-uri``.
* ``step``: change the canary share.
* ``promote``: ``champion`` moves to the canary's version, ``challenger`` is dropped, and
  ``canaryTrafficPercent`` is removed so the new revision takes all traffic.
* ``rollback``: the canary is pinned to 0% (traffic back on the previous revision at once),
  the previous spec is restored (still at 0%), the restored revision is awaited (``--ready-timeout``),
  and only then is the canary field dropped; ``challenger`` is dropped.
* ``pin``: serve exactly ``--version`` (default: the ``champion`` alias's version) without a canary,
  and point ``champion`` at it. Revisions always name a version, never the moving alias: a restarted
  pod of an old revision must not load a newer model.
* ``sync --overlay ENV``: write the live InferenceService's rollout state into the overlay (GitOps
  then applies what runs instead of a conflict).

Online, the InferenceService is patched through the Kubernetes API (JSON merge patches under the
field manager ``constructos-rollout`` that carry ``resourceVersion``: a concurrent change is a
conflict, which is re-read and re-planned up to ``--retries`` times; see :mod:`pipelines.rollout.targets`
for who owns which field).
``--dry-run`` prints the patches and alias moves and changes nothing. ``--overlay ENV`` works
offline (GitOps): it renders the overlay with kustomize and rewrites
``manifests/overlays/ENV/rollout/<model>.yaml``; commit and apply that instead.

``analyze`` compares the challenger with the champion (:mod:`pipelines.rollout.canary`) from Prometheus
(``--prometheus URL``) or the inference log on Kafka, and answers promote / rollback /
inconclusive with reasons (exit code 0 / 1 / 3). ``auto`` starts a canary if none runs and
climbs ``--ladder`` (10,25,50,100), analysing every ``--interval`` seconds; it promotes at the top,
and rolls back after ``--failure-limit`` failed analyses or ``--max-checks`` without a decision.

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
from pipelines.rollout.commands import plan_for, run, status_lines, sync
from pipelines.rollout.plan import CHALLENGER, CHAMPION, COMMANDS, NAMESPACE, RolloutError, Serving
from pipelines.rollout.targets import Cluster, Overlay, Target, overlay_dir

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
    where: Target,
    client: Callable[[], MlflowClient],
    say: Callable[[str], None] = print,
    analyse: Callable[[], Any] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> str:
    """Climb the ladder until promoted or rolled back; returns ``promote`` or ``rollback``."""
    import time

    from pipelines.rollout.canary import next_step, parse_ladder

    analyse = analyse or (lambda: analysis(args, client))
    sleep = sleep or time.sleep
    ladder = parse_ladder(args.ladder)
    if not Serving.from_isvc(where.get(args.model)).canary_running:
        for line in run(command(args, "start", ladder[0]), where, client):
            say(line)
    failures = 0
    for check in range(1, args.max_checks + 1):
        sleep(args.interval)
        verdict = analyse()
        percent = Serving.from_isvc(where.get(args.model)).canary_percent
        step, failures = next_step(percent, verdict, failures, args.failure_limit, ladder)
        say(f"check {check}: {verdict.decision} -> {step.action} {step.percent or ''} ({step.reason})")
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
    args: argparse.Namespace, action: str, where: Target, client: Callable[[], MlflowClient], say: Callable[[str], None]
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
        where: Target = Overlay(overlay_dir(args.overlay, args.manifests)) if args.overlay else Cluster(args.namespace)
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
