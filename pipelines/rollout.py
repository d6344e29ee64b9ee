"""Canary rollouts of a model's InferenceService, with the MLflow aliases moved in step.

    python -m pipelines.rollout status|start|step|promote|rollback <model> [--percent N]

* ``start``: the new version (``--version`` or the ``challenger`` alias) gets a canary share
  (``--percent``, default: the ISVC's ``constructos.io/canary-percent`` annotation); the
  URI to return to is recorded in ``constructos.io/stable-model-uri``.
* ``step``: change the canary share.
* ``promote``: ``champion`` moves to the canary's version, ``challenger`` is dropped, and
  ``canaryTrafficPercent`` is removed so the new revision takes all traffic.
* ``rollback``: the canary is pinned to 0 (traffic back on the previous revision at once),
  then the previous spec is restored; ``challenger`` is dropped.

Online, the InferenceService is patched through the Kubernetes API (JSON merge patches that
carry ``resourceVersion``, so a concurrent change fails instead of being overwritten).
``--dry-run`` prints the patches and alias moves and changes nothing. ``--overlay ENV`` works
offline (GitOps): it renders the overlay with kustomize and rewrites
``manifests/overlays/ENV/rollout/<model>.yaml``; commit and apply that instead.

``analyze`` compares the challenger with the champion (:mod:`pipelines.canary`) from Prometheus
(``--prometheus URL``) or the inference log on Kafka, and answers promote / rollback /
inconclusive with reasons (exit code 0 / 1 / 3). ``auto`` starts a canary if none runs and
climbs ``--ladder`` (10,25,50,100), analysing every ``--interval`` seconds; it promotes at the top,
and rolls back after ``--failure-limit`` failed analyses or ``--max-checks`` without a decision.

The decisions are pure functions (``plan_*``: state in, target states out); everything that
talks to a cluster, MLflow or the file system is a thin shell around them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

if TYPE_CHECKING:
    from mlflow import MlflowClient

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE = "constructos-ml"
URI_ARG = "--model_uri="
STABLE_ANNOTATION = "constructos.io/stable-model-uri"
PERCENT_ANNOTATION = "constructos.io/canary-percent"
CHAMPION, CHALLENGER = "champion", "challenger"
COMMANDS = ("status", "start", "step", "promote", "rollback", "analyze", "auto")

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
        )


@dataclass(frozen=True)
class Plan:
    steps: tuple[Serving, ...]
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
    uri = version_uri(model, version)
    if uri == current.model_uri:
        raise RolloutError(f"{model}: {uri} is already serving")
    share = check_percent(current.default_percent if percent is None else percent)
    return Plan((Serving(uri, share, current.model_uri, current.default_percent),), {CHALLENGER: version})


def plan_step(model: str, current: Serving, percent: int) -> Plan:
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; `start` one first")
    return Plan((replace(current, canary_percent=check_percent(percent)),))


def plan_promote(model: str, current: Serving) -> Plan:
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to promote")
    version = uri_version(current.model_uri)
    if version is None:
        raise RolloutError(f"{model}: the canary {current.model_uri} pins no registry version")
    target = Serving(current.model_uri, None, None, current.default_percent)
    return Plan((target,), {CHAMPION: version, CHALLENGER: None})


def plan_rollback(model: str, current: Serving) -> Plan:
    if not current.canary_running:
        raise RolloutError(f"{model}: no canary is running; nothing to roll back")
    # A canary started without this tool has no recorded stable URI: the champion is the stable one.
    stable = current.stable_uri or f"models:/{model}@{CHAMPION}"
    restored = Serving(stable, None, None, current.default_percent)
    pinned = replace(current, canary_percent=0)
    steps = (restored,) if current.canary_percent == 0 else (pinned, restored)
    return Plan(steps, {CHALLENGER: None})


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


# --- MLflow aliases -------------------------------------------------------------------------


def read_aliases(client: MlflowClient, model: str) -> dict[str, str | None]:
    from mlflow.exceptions import MlflowException

    found: dict[str, str | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            found[alias] = str(client.get_model_version_by_alias(model, alias).version)
        except MlflowException:
            found[alias] = None
    return found


def move_aliases(client: MlflowClient, model: str, aliases: dict[str, str | None]) -> None:
    from mlflow.exceptions import MlflowException

    for alias, version in aliases.items():
        if version is None:
            with contextlib.suppress(MlflowException):  # already gone: dropping is idempotent
                client.delete_registered_model_alias(model, alias)
        else:
            client.get_model_version(model, version)  # raises if the version does not exist
            client.set_registered_model_alias(model, alias, version)


# --- where the InferenceService lives -------------------------------------------------------


class Target(Protocol):
    def get(self, model: str) -> Resource: ...
    def describe(self, model: str, isvc: Resource, target: Serving) -> str: ...
    def apply(self, model: str, isvc: Resource, target: Serving) -> str: ...


class Cluster:
    """The live InferenceService, through the Kubernetes API."""

    def __init__(self, namespace: str, api: Any = None) -> None:
        from kubernetes import client, config

        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, OSError) as e:
                    raise RolloutError(f"no cluster to talk to ({e}); use --overlay ENV for GitOps") from e
            api = client.CustomObjectsApi()
        self.api = api
        self.namespace = namespace

    def get(self, model: str) -> Resource:
        obj: Resource = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, isvc_name(model))
        return obj

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"patch InferenceService {self.namespace}/{isvc_name(model)}: {json.dumps(merge_patch(isvc, target))}"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        body = merge_patch(isvc, target)
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, isvc_name(model), body)
        return self.describe(model, isvc, target)


class Overlay:
    """GitOps: the overlay's rollout file, rendered with kustomize."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, model: str) -> Resource:
        from pipelines.manifests_check import build

        for res in build(self.directory):
            if res.get("kind") == "InferenceService" and res["metadata"]["name"] == isvc_name(model):
                return res
        raise RolloutError(f"{self.directory} renders no InferenceService {isvc_name(model)}")

    def path(self, model: str) -> Path:
        return self.directory / "rollout" / f"{model}.yaml"

    def text(self, model: str, isvc: Resource, target: Serving) -> str:
        header = (
            f"# Rollout state of {model} in {self.directory.name}, written by "
            f"`python -m pipelines.rollout <cmd> {model} --overlay {self.directory.name}`.\n"
        )
        return header + yaml.safe_dump(overlay_ops(isvc, target), sort_keys=False)

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"{self.path(model)}:\n{self.text(model, isvc, target)}"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        path = self.path(model)
        if not path.is_file():
            raise RolloutError(f"{path} does not exist: the overlay has no rollout file for {model}")
        path.write_text(self.text(model, isvc, target))
        return f"wrote {self.describe(model, isvc, target)}"


def start_canary(
    model: str, version: str, percent: int | None = None, *, namespace: str = NAMESPACE, api: Any = None
) -> str:
    """For a pipeline's deploy step: put ``version`` on a canary of the live InferenceService,
    touching nothing else (the caller has set the ``challenger`` alias). Returns the patch."""
    cluster = Cluster(namespace, api)
    isvc = cluster.get(model)
    return cluster.apply(model, isvc, plan_start(model, Serving.from_isvc(isvc), version, percent).steps[0])


def overlay_dir(name: str, manifests: Path) -> Path:
    direct = Path(name)
    return direct if direct.is_dir() else manifests / "overlays" / name


# --- command line ---------------------------------------------------------------------------


def plan_for(args: argparse.Namespace, current: Serving, aliases: Callable[[], dict[str, str | None]]) -> Plan:
    if args.command == "start":
        version = args.version or aliases().get(CHALLENGER)
        if not version:
            raise RolloutError(f"{args.model}: no --version given and no `{CHALLENGER}` alias in MLflow")
        return plan_start(args.model, current, version, args.percent)
    if args.command == "step":
        if args.percent is None:
            raise RolloutError("step needs --percent")
        return plan_step(args.model, current, args.percent)
    if args.command == "promote":
        return plan_promote(args.model, current)
    return plan_rollback(args.model, current)


def status_lines(model: str, isvc: Resource, aliases: dict[str, str | None] | None) -> list[str]:
    state = Serving.from_isvc(isvc)
    lines = [
        f"model:          {model} (InferenceService {isvc_name(model)})",
        f"deploymentMode: {isvc['metadata'].get('annotations', {}).get('serving.kserve.io/deploymentMode')}",
        f"model_uri:      {state.model_uri}",
        f"canary:         {'none' if state.canary_percent is None else f'{state.canary_percent}%'}",
        f"stable_uri:     {state.stable_uri or '-'}",
        f"default canary: {state.default_percent}%",
    ]
    if aliases is not None:
        lines += [f"alias {name}: {version or '-'}" for name, version in aliases.items()]
    traffic = ((isvc.get("status") or {}).get("components") or {}).get("predictor", {}).get("traffic") or []
    lines += [f"traffic:        {t.get('percent')}% -> {t.get('revisionName')}" for t in traffic]
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.rollout", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("model", help="model name, e.g. credit_risk")
    parser.add_argument("--percent", type=int, help="canary share of traffic (start, step)")
    parser.add_argument("--version", help="registry version to start (default: the challenger alias)")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--dry-run", action="store_true", help="print the patches and alias moves, change nothing")
    parser.add_argument("--overlay", help="offline (GitOps): edit this overlay (name or directory) instead")
    parser.add_argument("--offline", action="store_true", help="require --overlay; never touch a cluster")
    parser.add_argument("--manifests", type=Path, default=Path(__file__).resolve().parent.parent / "manifests")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI / settings)")
    parser.add_argument("--no-aliases", action="store_true", help="leave the MLflow aliases alone")
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
    if args.offline and not args.overlay:
        parser.error("--offline needs --overlay ENV")
    return args


def mlflow_client(tracking_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    from pipelines.settings import get_settings

    uri = tracking_uri or get_settings().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run(args: argparse.Namespace, where: Target, client: Callable[[], MlflowClient]) -> list[str]:
    """Carry out one command; returns what it did (or would do, with --dry-run)."""
    isvc = where.get(args.model)
    if args.command == "status":
        aliases = None if args.no_aliases else read_aliases(client(), args.model)
        return status_lines(args.model, isvc, aliases)

    plan = plan_for(args, Serving.from_isvc(isvc), lambda: read_aliases(client(), args.model))
    steps = plan.steps
    out: list[str] = []
    if isinstance(where, Overlay) and len(steps) > 1:
        steps = steps[:1]  # GitOps: each step is its own commit and apply
        out.append(f"step 1 of {len(plan.steps)}: apply this, then run `{args.command}` again")
    if args.dry_run:
        out += [f"alias {a} -> {v or '(drop)'}" for a, v in plan.aliases.items() if not args.no_aliases]
        for target in steps:
            out.append(where.describe(args.model, isvc, target))
            isvc = apply_merge_patch(isvc, merge_patch(isvc, target))
        return out
    # Aliases first: every command is then safe to re-run if the patch fails.
    if plan.aliases and not args.no_aliases:
        move_aliases(client(), args.model, plan.aliases)
        out += [f"alias {a} -> {v or '(dropped)'}" for a, v in plan.aliases.items()]
    for i, target in enumerate(steps):
        if i:
            isvc = where.get(args.model)  # fresh resourceVersion for the next patch
        out.append(where.apply(args.model, isvc, target))
    return out


# --- analyze / auto ------------------------------------------------------------------------


def gather_evidence(args: argparse.Namespace, aliases: dict[str, str | None]) -> Any:
    """The canary evidence for the aliased versions, from Prometheus or the inference log."""
    from feature_specs import load_spec
    from pipelines import canary_sources
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
    from pipelines.canary import Policy, analyze

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

    from pipelines.canary import next_step, parse_ladder

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
