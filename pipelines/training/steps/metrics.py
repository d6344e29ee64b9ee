"""The holdout metrics of a model's scores, by the spec's task: what evaluate's gate, tune's
cross-validation and live accuracy (monitoring) all compare."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from feature_specs.spec import FeatureSpec


def compute_metrics(spec: FeatureSpec, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    if spec.is_classifier:
        return {
            "roc_auc": float(skm.roc_auc_score(y, score)),
            "pr_auc": float(skm.average_precision_score(y, score)),
            "f1": float(skm.f1_score(y, score >= spec.gate.threshold)),
            "brier": float(skm.brier_score_loss(y, score)),
        }
    return {
        "mae": float(skm.mean_absolute_error(y, score)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y, score))),
        "mape": float(skm.mean_absolute_percentage_error(y[y > 0], score[y > 0])) if (y > 0).any() else float("nan"),
    }
