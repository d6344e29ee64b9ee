"""Run the training pipeline on this machine with kfp.local (every step a subprocess of this
interpreter) and summarise the outcome from MLflow.

    python -m pipelines.training.run credit_risk [--hp learning_rate=0.05] [--since 2026-01-01] [--shuffle-labels]

Exit status: 0 the model passed its gate (registered and deployed), 1 a step failed (e.g.
validate), 3 the gate rejected the model — so CI fails on a model below the accuracy floor.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from feature_specs.spec import load_spec, spec_names
from pipelines.settings import get_settings
from pipelines.streaming.landing import parts as landing_parts
from pipelines.training import mlflow_store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunSummary:
    model: str
    pipeline_run_id: str
    mlflow_run_id: str
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    gate_passed: bool = False
    gate_reasons: str = ""
    version: str | None = None
    alias: str | None = None

    def lines(self) -> list[str]:
        from pipelines.training.steps.quality import GAP_NOTE, SCORERS, summary_lines

        others = (*(f"{s}_" for s in SCORERS), "champion_", "gap_", "tune_", "calibration_")
        shown = ", ".join(
            f"{k}={v:.4f}" for k, v in sorted(self.metrics.items()) if not k.startswith(others) and "_ci_" not in k
        )
        outcome = f"registered version {self.version} as @{self.alias}" if self.version else "not deployed"
        tuning = ""
        if "tune_seconds" in self.metrics:
            tuning = f"  tuning: {self.metrics['tune_trials']:.0f} trials in {self.metrics['tune_seconds']:.1f} s"
            extended = self.metrics.get("tune_budget_extended_s", 0.0)
            if extended > 0:
                tuning += f" (time budget extended by {extended:.1f} s to complete the guaranteed trials)"
        return [
            f"{self.model}: pipeline run {self.pipeline_run_id} in {self.seconds:.1f} s",
            f"  MLflow run {self.mlflow_run_id}",
            f"  metrics: {shown}",
            *([tuning] if tuning else []),
            f"  quality on the same holdout rows ({GAP_NOTE}):",
            *summary_lines(load_spec(self.model).gate.primary_metric, self.metrics),
            f"  gate {'PASSED' if self.gate_passed else 'FAILED'}: {self.gate_reasons}",
            f"  {outcome}",
            f"  model card: {self.card_path()}",
        ]

    def card_path(self) -> Path:
        """Where kfp.local wrote the run's model card (also on the MLflow run: model_card.md)."""
        return get_settings().data_dir / "kfp" / self.pipeline_run_id / "evaluate" / "model_card"


class TaskLogFilter(io.TextIOBase):
    """Drops kfp's executor boilerplate (the executor input JSON, file paths) from streamed task logs."""

    _NOISE = ("[KFP Executor", "Wrote executor output file", "ephemeral docs site")
    _BRIEF = re.compile(r"Task .* finished with status|^\s{4}(extract|validate|tune|train|evaluate|deploy):")
    _ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, target: Any, *, brief: bool = False) -> None:
        self.target = target
        self.brief = brief  # only a line per step: what it did and how it finished
        self.skipping = False
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if self._keep(line):
                self.target.write((self._ANSI.sub("", line) if self.brief else line) + "\n")
        return len(text)

    def _keep(self, line: str) -> bool:
        if self.skipping:
            self.skipping = line.rstrip() != "    }"  # the end of the indented JSON block
            return False
        if "Got executor_input:" in line:
            self.skipping = True
            return False
        if self.brief:
            return bool(self._BRIEF.search(self._ANSI.sub("", line)))
        return not any(noise in line for noise in self._NOISE)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        if self.pending and self._keep(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


def init_local() -> None:
    """kfp.local with subprocesses of this interpreter; task outputs under ``<data_dir>/kfp``."""
    import kfp.local

    root = (get_settings().data_dir / "kfp").resolve()
    root.mkdir(parents=True, exist_ok=True)
    # the task subprocesses import this project whatever the working directory
    paths = [str(PROJECT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))


def summarise(model: str, mlflow_run_id: str, seconds: float) -> RunSummary:
    from mlflow import MlflowClient

    mlflow_store.configure()
    run = MlflowClient().get_run(mlflow_run_id)
    tags = run.data.tags
    return RunSummary(
        model=model,
        pipeline_run_id=tags.get("pipeline_run_id", ""),
        mlflow_run_id=mlflow_run_id,
        seconds=seconds,
        metrics=dict(run.data.metrics),
        gate_passed=tags.get("gate_passed") == "true",
        gate_reasons=tags.get("gate_reasons", ""),
        version=tags.get("registered_version"),
        alias=tags.get("alias"),
    )


def run_local(model: str, *, verbose: bool = False, brief: bool = False, **params: Any) -> RunSummary:
    """Run the whole DAG for ``model``; raises RuntimeError when a step fails (e.g. validate)."""
    import warnings

    from pipelines.training.pipeline import training_pipeline

    load_spec(model)  # fail fast on an unknown model
    init_local()
    started = time.perf_counter()
    quiet = TaskLogFilter(sys.stdout, brief=brief)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stdout if verbose else quiet):
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            task = training_pipeline(model=model, **params)
        finally:
            quiet.close()
    return summarise(model, str(task.output), time.perf_counter() - started)


def parse_hyperparameters(pairs: list[str]) -> dict[str, Any]:
    """``["learning_rate=0.05", "max_iter=200"]`` -> typed values (YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected name=value, got '{pair}'")
        out[name] = yaml.safe_load(value)
    return out


def pipeline_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "hyperparameters": parse_hyperparameters(args.hp),
        "since": args.since,
        "until": args.until,
        "holdout_fraction": args.holdout_fraction,
        "seed": args.seed,
        "canary_percent": args.canary_percent,
        "shuffle_labels": args.shuffle_labels,
        "tune_trials": args.tune_trials,
        "tune_timeout_s": args.tune_timeout,
    }


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=spec_names())
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="estimator hyperparameter")
    parser.add_argument("--since", default="", help="first occurred_at to include (ISO-8601)")
    parser.add_argument("--until", default="", help="occurred_at to stop before (ISO-8601)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canary-percent", type=int, default=-1, help="challenger traffic share (default: spec)")
    parser.add_argument("--shuffle-labels", action="store_true", help="diagnostic: the gate must reject the model")
    parser.add_argument("--tune-trials", type=int, default=-1, help="search trials (default: spec; 0: no search)")
    parser.add_argument("--tune-timeout", type=float, default=-1.0, help="search time budget in s (default: spec)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show kfp's full executor logs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.training.run", description=__doc__.splitlines()[0])
    add_pipeline_arguments(parser)
    args = parser.parse_args(argv)
    store = get_settings().landing_store
    if not landing_parts.part_keys(store, args.model):
        print(
            f"{args.model}: no landed data in {store.uri}/{args.model}: publish events to its topic "
            f"'{load_spec(args.model).source_topic}' with the trigger running, or copy Parquet parts there",
            file=sys.stderr,
        )
        return 1
    print(f"MLflow: {mlflow_store.configure()}")
    try:
        summary = run_local(args.model, verbose=args.verbose, **pipeline_arguments(args))
    except RuntimeError as exc:
        print(f"\n{args.model}: pipeline failed: {exc}", file=sys.stderr)
        return 1
    print("\n" + "\n".join(summary.lines()))
    return 0 if summary.gate_passed else 3  # CI: a model that fails its gate fails the job


if __name__ == "__main__":
    sys.exit(main())
