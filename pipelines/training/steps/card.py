"""The model card: one Markdown page on what a trained version is, what it was trained on, how good
it is against its references and why the gate let it through (or not).

The evaluate step writes it as the run's ``Markdown`` artifact (the KFP UI renders it) and logs it
to the MLflow run; the deploy step makes it the registered version's description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from feature_specs.spec import Feature, FeatureSpec
from pipelines.training.steps.quality import SCORERS, QualityReport

#: how the card names each reference in its quality table
TITLES = SCORERS | {"model": "this model"}


@dataclass(frozen=True)
class DataVersion:
    """Which rows trained and scored the model."""

    data_hash: str
    rows: int
    snapshot_uri: str = ""
    first: str = ""  # the earliest and latest ``occurred_at`` of the snapshot
    last: str = ""
    train_rows: int = 0
    holdout_rows: int = 0

    @classmethod
    def of(cls, frame: pd.DataFrame, data_hash: str, snapshot_uri: str, train_rows: int, holdout_rows: int) -> Any:
        first = last = ""
        if "occurred_at" in frame and frame["occurred_at"].notna().any():
            times = pd.to_datetime(frame["occurred_at"], utc=True, errors="coerce").dropna()
            if len(times):
                first, last = times.min().isoformat(), times.max().isoformat()
        return cls(data_hash, len(frame), snapshot_uri, first, last, train_rows, holdout_rows)


@dataclass
class Training:
    """How the model was fitted (from the MLflow run: the tune and train steps' tags and params)."""

    tuning: str = ""  # the run's ``tuning`` tag
    defaults_note: str | None = None  # set when it trained on the spec's defaults
    params: dict[str, str] = field(default_factory=dict)  # the estimator's parameters as logged
    calibration: str = "none"
    calibration_brier: dict[str, float] = field(default_factory=dict)  # validation Brier by method


def _contract(f: Feature) -> str:
    if f.dtype == "category":
        values = ", ".join(f.categories or ())
        return f"one of {values}" + ("; others read as unknown" if f.allow_unknown else "; others refused")
    parts = []
    if f.min is not None or f.max is not None:
        low = "-inf" if f.min is None else f"{f.min:g}"
        parts.append(f"{low} to {'inf' if f.max is None else f'{f.max:g}'}")
    if f.monotone:
        parts.append(f"effect {f.monotone} (enforced)")
    return "; ".join(parts) or "-"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def features_table(spec: FeatureSpec) -> list[str]:
    rows = ["| feature | type | contract | when missing | meaning |", "|---|---|---|---|---|"]
    for f in spec.features:
        missing = f"imputed ({f.impute})" if f.optional else "refused"
        rows.append(f"| `{f.name}` | {f.dtype} | {_cell(_contract(f))} | {missing} | {_cell(f.description)} |")
    return rows


def quality_table(report: QualityReport) -> list[str]:
    name = report.primary_metric
    rows = [f"| scorer | {name} [95% interval] | gap of this model [95% interval] |", "|---|---|---|"]
    for scorer in TITLES:
        if scorer not in report.metrics:
            continue
        value = report.metrics[scorer][name]
        gap = report.gaps.get(scorer)
        shown = f"{gap.value:+.2f}% [{gap.low:+.2f}, {gap.high:+.2f}]" if gap else "-"
        rows.append(f"| {TITLES[scorer]} | {value.value:.4f} [{value.low:.4f}, {value.high:.4f}] | {shown} |")
    return rows


def limits(spec: FeatureSpec, data: DataVersion, report: QualityReport, training: Training) -> list[str]:
    """What the figures above do not promise, from this run's own numbers."""
    out = []
    if training.defaults_note:
        out.append(training.defaults_note)
    span = f"from {data.first} to {data.last}" if data.first else "of the snapshot"
    out.append(
        f"Trained and scored on rows {span}; the holdout is a random share of the same period, "
        "so the figures do not measure how the model ages: drift monitoring and retraining do."
    )
    best = report.gaps.get("best")
    if best is None:
        out.append("No best-achievable reference for these rows (known for synthetic data only): the gap is unknown.")
    elif best.low > 0:
        out.append(f"{best.value:.2f}% [{best.low:.2f}, {best.high:.2f}] short of the best achievable on these rows.")
    baseline = report.gaps.get("baseline")
    if baseline is not None and baseline.low <= 0 <= baseline.high:
        out.append("Not distinguishable from the untuned default estimator on this holdout (its gap interval holds 0).")
    optional = [f.name for f in spec.features if f.optional]
    if optional:
        out.append(f"Missing values of {', '.join(optional)} are imputed; such rows lean on the other features.")
    unknown = [f.name for f in spec.features if f.allow_unknown]
    if unknown:
        out.append(f"Unseen categories of {', '.join(unknown)} are read as unknown, not refused.")
    if spec.is_classifier:
        out.append(f"F1 and the confusion matrix use the threshold {spec.gate.threshold:g} on the probability.")
    if spec.pii:
        out.append(f"Never sees {', '.join(p.name for p in spec.pii)}: personal data is dropped before landing.")
    return out


def model_card(
    spec: FeatureSpec,
    data: DataVersion,
    report: QualityReport,
    gate_passed: bool,
    reasons: list[str],
    training: Training,
    *,
    mlflow_run_id: str = "",
    pipeline_run_id: str = "",
    champion_version: str | None = None,
) -> str:
    """The card as Markdown."""
    target = spec.target
    kind = "a probability" if spec.is_classifier else "a number"
    lines = [
        f"# {spec.name}: model card",
        "",
        f"**Predicts** `{target.name}` ({kind}): {target.description} {spec.description}",
        "",
        f"- task: {spec.task.replace('_', ' ')}; estimator: {spec.estimator.kind}; owner: {spec.owner}",
        f"- feature spec version {spec.version}; MLflow run `{mlflow_run_id}`; pipeline run `{pipeline_run_id}`",
        f"- gate: **{'PASSED' if gate_passed else 'FAILED'}**"
        + (f"; compared with champion v{champion_version}" if champion_version else "; no champion yet"),
        "",
        "## Data",
        "",
        f"- snapshot `{data.data_hash}`" + (f" at `{data.snapshot_uri}`" if data.snapshot_uri else ""),
        f"- {data.rows:,} rows" + (f", events from {data.first} to {data.last}" if data.first else ""),
        f"- {data.train_rows:,} training rows, {data.holdout_rows:,} holdout rows (a seeded random split)",
        "",
        "## Features and their contract",
        "",
        "Requests are checked against this contract before scoring (the same check at training).",
        "",
        *features_table(spec),
        "",
        "## Quality on the holdout",
        "",
        f"Every scorer on the same {report.rows:,} holdout rows, paired bootstrap 95% intervals; gap: how much",
        "worse this model is, in % of that scorer's value (negative: this model is better).",
        "",
        *quality_table(report),
        "",
        "All metrics of this model: "
        + ", ".join(f"{name} {iv}" for name, iv in report.metrics["model"].items())
        + (" (F1 at the gate's threshold)" if spec.is_classifier else ""),
        "",
        f"## Gate: {'PASSED' if gate_passed else 'FAILED'}",
        "",
        *(f"- {reason}" for reason in reasons),
        "",
        "## Training",
        "",
        f"- tuning: {training.tuning or 'not recorded'}",
        "- parameters: " + (", ".join(f"{k}={v}" for k, v in sorted(training.params.items())) or "-"),
    ]
    if spec.is_classifier:
        brier = ", ".join(f"{k} {v:.5f}" for k, v in sorted(training.calibration_brier.items()))
        holdout = report.metrics["model"].get("brier")
        lines += [
            "",
            "## Calibration",
            "",
            f"- served calibration: **{training.calibration}**"
            + (f" (validation Brier score by method: {brier})" if brier else ""),
            *([f"- holdout Brier score {holdout}"] if holdout else []),
            "- the calibration plot is in the run's plots",
        ]
    lines += ["", "## Known limits", "", *(f"- {line}" for line in limits(spec, data, report, training)), ""]
    return "\n".join(lines)
