"""evaluate: holdout metrics with bootstrap intervals, baselines, diagnostic plots and the gate.

The candidate, its baselines (:mod:`.baselines`) and, where known, the best achievable are scored
on the same holdout rows (:mod:`.quality`). The gate passes when every absolute floor/ceiling of
the spec holds AND the candidate's primary metric is no worse than each baseline's and the current
``@champion``'s on that holdout by more than the spec's ``tolerance`` (relative to theirs).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from feature_specs.spec import FeatureSpec
from pipelines.training import mlflow_store
from pipelines.training.steps import baselines, card, quality, tune, ui
from pipelines.training.steps.metrics import compute_metrics
from pipelines.training.steps.train import labels, model_input, scores, split
from predictors.runtime.loading import load_model

log = logging.getLogger(__name__)

#: rows used for permutation importance (enough to rank features, cheap at any data size).
IMPORTANCE_ROWS = 2000


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)


#: how the gate's reasons name each baseline
BASELINE_NAMES = {"baseline": "untuned default estimator", "naive": "naive last-value forecast"}


def _no_worse(spec: FeatureSpec, new: float, old: float) -> bool:
    slack = spec.gate.tolerance * abs(old)
    return new >= old - slack if spec.gate.greater_is_better else new <= old + slack


def gate(
    spec: FeatureSpec,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    references: dict[str, float] | None = None,
) -> GateResult:
    """Every check of the spec's gate, in words; ``passed`` only if all hold. ``references`` are the
    baselines' primary metric on the same holdout, by scorer (``baseline``, ``naive``)."""
    g = spec.gate
    reasons, passed = [], True
    for name, floor in g.floors.items():
        ok = candidate[name] >= floor
        passed &= ok
        reasons.append(f"{name} {candidate[name]:.4f} {'>=' if ok else '<'} floor {floor:g}")
    for name, ceiling in g.ceilings.items():
        ok = candidate[name] <= ceiling
        passed &= ok
        reasons.append(f"{name} {candidate[name]:.4f} {'<=' if ok else '>'} ceiling {ceiling:g}")
    for scorer, value in (references or {}).items():
        ok = _no_worse(spec, candidate[g.primary_metric], value)
        passed &= ok
        reasons.append(
            f"{g.primary_metric} {candidate[g.primary_metric]:.4f} vs {BASELINE_NAMES.get(scorer, scorer)} "
            f"{value:.4f}: {'within' if ok else 'loses beyond'} tolerance {g.tolerance:.0%}"
        )
    if champion is None:
        reasons.append("no champion to compare with")
    else:
        name = g.primary_metric
        new, old = candidate[name], champion[name]
        ok = _no_worse(spec, new, old)
        passed &= ok
        reasons.append(
            f"{name} {new:.4f} vs champion {old:.4f}: {'within' if ok else 'worse than'} tolerance {g.tolerance:.0%}"
        )
    return GateResult(bool(passed), reasons)


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plots(spec: FeatureSpec, model: Any, x: pd.DataFrame, y: np.ndarray, score: np.ndarray) -> dict[str, bytes]:
    """PNG plots by file name: ROC + calibration (classifiers), residuals (regression), importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.inspection import permutation_importance

    out: dict[str, bytes] = {}
    if spec.is_classifier:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        fpr, tpr, _ = skm.roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(y, score):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{spec.name}: ROC")
        ax.legend(loc="lower right")
        out["roc.png"] = _figure_png(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        observed, predicted = calibration_curve(y, score, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, "o-")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"{spec.name}: calibration")
        out["calibration.png"] = _figure_png(fig)
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(score, y - score, s=4, alpha=0.3)
        ax.axhline(0, color="grey", linestyle="--")
        ax.set(xlabel="prediction", ylabel="actual - prediction", title=f"{spec.name}: residuals")
        out["residuals.png"] = _figure_png(fig)

    rng = np.random.default_rng(0)
    sample = rng.choice(len(x), size=min(len(x), IMPORTANCE_ROWS), replace=False)
    scoring = "roc_auc" if spec.is_classifier else "neg_mean_absolute_error"
    result = permutation_importance(model, x.iloc[sample], y[sample], scoring=scoring, n_repeats=3, random_state=0)
    order = np.argsort(result.importances_mean)
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(order) + 1))
    ax.barh(np.asarray(x.columns)[order], result.importances_mean[order], xerr=result.importances_std[order])
    ax.set(xlabel=f"drop in {scoring} when permuted", title=f"{spec.name}: permutation importance")
    out["feature_importance.png"] = _figure_png(fig)
    return out


def champion_metrics(spec: FeatureSpec, x: pd.DataFrame, y: np.ndarray) -> tuple[str, dict[str, float]] | None:
    """The current ``@champion`` scored on the same holdout: (version, metrics), or None.
    Loaded like serving loads it (skops, our allow-list): an unsafe champion stops the step."""
    version = mlflow_store.version_by_alias(spec.name, mlflow_store.CHAMPION)
    if version is None:
        return None
    champion = load_model(f"models:/{spec.name}/{version.version}").pipeline
    return str(version.version), compute_metrics(spec, y, scores(spec, champion, x))


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the candidate's metrics
    figures: dict[str, float]  # every reported figure with intervals (QualityReport.flat)
    gate: GateResult
    champion_version: str | None
    plots: dict[str, bytes]
    report: quality.QualityReport
    card: str = ""  # the model card (Markdown)
    page: str = ""  # the plots and the quality table as one self-contained HTML page
    roc: tuple[list[float], ...] | None = None  # classifiers: (fpr, tpr, thresholds) for the KFP UI
    confusion: list[list[int]] | None = None  # classifiers: at the gate's threshold, rows actual (false, true)


def training_record(mlflow_run_id: str) -> card.Training:
    """How the run's model was fitted, from what the tune and train steps logged."""
    from mlflow import MlflowClient

    run = MlflowClient().get_run(mlflow_run_id)
    tags, metrics = run.data.tags, run.data.metrics
    skip = ("holdout_fraction", "seed", "shuffle_labels", "train_rows", "holdout_rows", "calibration")
    params = {k: v for k, v in run.data.params.items() if not k.startswith("search.") and k not in skip}
    brier = {k.removeprefix("calibration_brier_"): v for k, v in metrics.items() if k.startswith("calibration_brier_")}
    return card.Training(
        tuning=tags.get("tuning", ""),
        defaults_note=tune.defaults_note(tags),
        params=params,
        calibration=tags.get("calibration", "none"),
        calibration_brier=brier,
    )


def holdout_scores(
    spec: FeatureSpec, model: Any, train_rows: pd.DataFrame, holdout: pd.DataFrame, data_dir: Path | None
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """The holdout's model input and labels, and every scorer's scores on exactly those rows."""
    x, y = model_input(spec, holdout), labels(spec, holdout)
    out = {"model": scores(spec, model, x)}
    default = baselines.default_model(spec).fit(model_input(spec, train_rows), labels(spec, train_rows))
    out["baseline"] = scores(spec, default, x)
    naive = baselines.naive_forecast(spec, x)
    if naive is not None:
        out["naive"] = naive
    best = baselines.holdout_best_achievable(data_dir, spec, holdout) if data_dir else None
    if best is not None:
        out["best"] = best
    return x, y, out


def evaluate(
    spec: FeatureSpec,
    snapshot: pd.DataFrame,
    mlflow_run_id: str,
    model_uri: str,
    plots_dir: Path,
    *,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
    data_hash: str = "",
    snapshot_uri: str = "",
) -> Evaluation:
    """Split ``snapshot`` exactly as train did; score the candidate, its baselines (the default
    estimator fitted on the same training rows), the best achievable (synthetic rows under
    ``data_dir``) and the champion on the holdout; log metrics with intervals, plots, the gate
    outcome and the model card to the MLflow run. A model trained on the spec's defaults without
    a search says so in the gate's reasons (it does not fail the gate for it)."""
    import mlflow

    mlflow_store.configure()
    model = load_model(model_uri).pipeline
    train_rows, holdout = split(spec, snapshot, holdout_fraction, seed)
    x, y, scored = holdout_scores(spec, model, train_rows, holdout, data_dir)
    report = quality.bootstrap(spec, y, scored, seed=seed)
    metrics = {name: iv.value for name, iv in report.metrics["model"].items()}
    champion = champion_metrics(spec, x, y)
    references: dict[str, float] = {
        s: report.metrics[s][spec.gate.primary_metric].value for s in ("baseline", "naive") if s in scored
    }
    result = gate(spec, metrics, champion[1] if champion else None, references)
    if champion:
        result.reasons[-1] += f" (v{champion[0]})"
    training = training_record(mlflow_run_id)
    if training.defaults_note:
        result.reasons.append(training.defaults_note)
    images = plots(spec, model, x, y, scored["model"])
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (plots_dir / name).write_bytes(png)
    figures = metrics | report.flat()
    data = card.DataVersion.of(snapshot, data_hash, snapshot_uri, len(train_rows), len(holdout))
    pipeline_run_id = mlflow.get_run(mlflow_run_id).data.tags.get("pipeline_run_id", "")
    text = card.model_card(
        spec,
        data,
        report,
        result.passed,
        result.reasons,
        training,
        mlflow_run_id=mlflow_run_id,
        pipeline_run_id=pipeline_run_id,
        champion_version=champion[0] if champion else None,
    )
    page = ui.page(f"{spec.name}: evaluation on {len(y):,} holdout rows", images, report.lines())
    evaluation = Evaluation(metrics, figures, result, champion[0] if champion else None, images, report, text, page)
    if spec.is_classifier:
        evaluation.roc = ui.roc_points(y, scored["model"])
        evaluation.confusion = ui.confusion(y, scored["model"], spec.gate.threshold)
    with mlflow.start_run(run_id=mlflow_run_id):
        mlflow.log_metrics(figures)
        if champion:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion[1].items()})
        mlflow.log_artifacts(str(plots_dir), "plots")
        mlflow.log_text("\n".join(report.lines()) + "\n", "quality.txt")
        mlflow.log_text(text, "model_card.md")
        mlflow.log_text(page, "evaluation.html")
        mlflow.set_tags(
            {
                "gate_passed": str(result.passed).lower(),
                "gate_reasons": "; ".join(result.reasons),
                "champion_version": champion[0] if champion else "",
            }
        )
    log.info("evaluate: %s", " | ".join(report.lines()))
    log.info("evaluate: gate %s: %s", "PASSED" if result.passed else "FAILED", "; ".join(result.reasons))
    return evaluation
