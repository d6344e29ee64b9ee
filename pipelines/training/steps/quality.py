"""Quality on one holdout, with uncertainty: every scorer (the candidate, its baselines, the best
achievable) is scored on exactly the same rows, and every metric gets a paired bootstrap 95%
interval — the same resamples for every scorer, so a gap between two of them has an interval too.

The metrics are computed for a whole matrix of bootstrap weights at once (row ``b`` holds how often
each holdout row was drawn in resample ``b``); they equal scikit-learn's metrics with
``sample_weight`` (tested) at a hundredth of the cost, which is what makes 1,000 resamples of
every metric cheap at 100k rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from feature_specs.spec import FeatureSpec

#: bootstrap resamples and the weight rows computed per batch (memory: batch x holdout rows).
RESAMPLES, BATCH = 1000, 50

Metric = Callable[[np.ndarray], np.ndarray]  # weights (B, n) -> metric per weight row (B,)


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending order of ``score`` and the start of each run of equal scores in that order."""
    order = np.argsort(score, kind="mergesort")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts


def classifier_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Metric]:
    """ROC AUC, PR AUC (average precision), F1 at ``threshold`` and Brier, each as a weights -> values function."""
    positive = y.astype(bool)
    order, starts = _tie_groups(score)
    pos_sorted = positive[order].astype(np.float64)
    predicted = score >= threshold

    last: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (weights, positives, negatives)

    def grouped(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted positives and negatives per run of equal scores (shared by ROC and PR AUC)."""
        if not last or last[0][0] is not w:
            ws = w[:, order]
            positives = np.add.reduceat(ws * pos_sorted, starts, axis=1)
            last[:] = [(w, positives, np.add.reduceat(ws, starts, axis=1) - positives)]
        return last[0][1], last[0][2]

    def roc_auc(w: np.ndarray) -> np.ndarray:
        gp, gn = grouped(w)
        below = np.cumsum(gn, axis=1) - gn
        return (gp * (below + 0.5 * gn)).sum(axis=1) / (gp.sum(axis=1) * gn.sum(axis=1))

    def pr_auc(w: np.ndarray) -> np.ndarray:
        gp, gn = grouped(w)
        tp, fp = np.cumsum(gp[:, ::-1], axis=1), np.cumsum(gn[:, ::-1], axis=1)
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        return (gp[:, ::-1] * precision).sum(axis=1) / gp.sum(axis=1)

    def f1(w: np.ndarray) -> np.ndarray:
        tp, fp, fn = w @ (predicted & positive), w @ (predicted & ~positive), w @ (~predicted & positive)
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(w)), where=(2 * tp + fp + fn) > 0)

    def brier(w: np.ndarray) -> np.ndarray:
        return (w @ (score - positive) ** 2) / w.sum(axis=1)

    return {"roc_auc": roc_auc, "pr_auc": pr_auc, "f1": f1, "brier": brier}


def regression_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, Metric]:
    """MAE, RMSE and MAPE (over rows with a positive target), each as a weights -> values function."""
    error = np.abs(y - prediction)
    positive = y > 0
    relative = np.where(positive, error / np.where(positive, y, 1.0), 0.0)
    out: dict[str, Metric] = {
        "mae": lambda w: (w @ error) / w.sum(axis=1),
        "rmse": lambda w: np.sqrt((w @ error**2) / w.sum(axis=1)),
    }
    if positive.any():
        out["mape"] = lambda w: (w @ relative) / (w @ positive)
    return out


def metric_functions(spec: FeatureSpec, y: np.ndarray, score: np.ndarray) -> dict[str, Metric]:
    return classifier_metrics(y, score, spec.gate.threshold) if spec.is_classifier else regression_metrics(y, score)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def named(self, name: str) -> dict[str, float]:
        return {name: self.value, f"{name}_ci_low": self.low, f"{name}_ci_high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass
class QualityReport:
    """Metrics by scorer (``model``, ``baseline``, ``naive``, ``best``) and the gap of the model to
    each other scorer in % of that scorer's primary metric (positive: the model is worse)."""

    primary_metric: str
    rows: int
    metrics: dict[str, dict[str, Interval]] = field(default_factory=dict)
    gaps: dict[str, Interval] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """MLflow metric names: ``roc_auc``, ``roc_auc_ci_low``, ``baseline_roc_auc``, ``gap_to_best_pct``, ..."""
        out: dict[str, float] = {}
        for scorer, metrics in self.metrics.items():
            prefix = "" if scorer == "model" else f"{scorer}_"
            for name, iv in metrics.items():
                out |= iv.named(f"{prefix}{name}")
        for scorer, iv in self.gaps.items():
            out |= iv.named(f"gap_to_{scorer}_pct")
        return out

    def lines(self) -> list[str]:
        head = f"the same {self.rows:,} holdout rows; {GAP_NOTE}"
        return [head, *summary_lines(self.primary_metric, self.flat())]


#: the scorers in the order reports show them, and how they are named there
SCORERS = {"model": "ours", "baseline": "untuned baseline", "naive": "naive last value", "best": "best achievable"}


GAP_NOTE = "bootstrap 95% intervals; gap: how much worse ours is, in % of that row (negative: ours is better)"


def summary_lines(primary_metric: str, flat: dict[str, float]) -> list[str]:
    """The quality table from a run's logged metrics (:meth:`QualityReport.flat`)."""
    out = []
    for scorer, title in SCORERS.items():
        name = primary_metric if scorer == "model" else f"{scorer}_{primary_metric}"
        if name not in flat:
            continue
        low, high = flat[f"{name}_ci_low"], flat[f"{name}_ci_high"]
        line = f"  {title:<17} {primary_metric} {flat[name]:.4f} [{low:.4f}, {high:.4f}]"
        gap = f"gap_to_{scorer}_pct"
        if gap in flat:
            line += f"   gap {flat[gap]:+.2f}% [{flat[gap + '_ci_low']:+.2f}, {flat[gap + '_ci_high']:+.2f}]"
        out.append(line)
    return out


def shortfall_pct(model: np.ndarray, reference: np.ndarray, greater_is_better: bool) -> np.ndarray:
    """How much worse the model is than the reference, in % of the reference (negative: better)."""
    diff = reference - model if greater_is_better else model - reference
    return 100 * diff / np.abs(reference)


def bootstrap(
    spec: FeatureSpec,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> QualityReport:
    """Score every scorer in ``scores`` (must include ``model``) on the rows of ``y`` with paired
    bootstrap percentile intervals."""
    n = len(y)
    functions = {scorer: metric_functions(spec, y, s) for scorer, s in scores.items()}
    ones = np.ones((1, n))
    point = {s: {m: float(f(ones)[0]) for m, f in fs.items()} for s, fs in functions.items()}
    draws: dict[str, dict[str, list[np.ndarray]]] = {s: {m: [] for m in fs} for s, fs in functions.items()}
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 1.0 / n)
    for start in range(0, resamples, BATCH):
        weights = rng.multinomial(n, uniform, size=min(BATCH, resamples - start)).astype(np.float64)
        for scorer, fs in functions.items():
            for metric, f in fs.items():
                draws[scorer][metric].append(f(weights))
    samples = {s: {m: np.concatenate(v) for m, v in ms.items()} for s, ms in draws.items()}

    def interval(value: float, values: np.ndarray) -> Interval:
        low, high = np.nanpercentile(values, [2.5, 97.5])
        return Interval(value, float(low), float(high))

    report = QualityReport(spec.gate.primary_metric, n)
    for scorer, metrics in point.items():
        report.metrics[scorer] = {m: interval(v, samples[scorer][m]) for m, v in metrics.items()}
    name, better = spec.gate.primary_metric, spec.gate.greater_is_better
    for scorer in scores:
        if scorer != "model":
            gap = shortfall_pct(np.array(point["model"][name]), np.array(point[scorer][name]), better)
            draws_gap = shortfall_pct(samples["model"][name], samples[scorer][name], better)
            report.gaps[scorer] = interval(float(gap), draws_gap)
    return report
