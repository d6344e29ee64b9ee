"""Probability calibration for classifiers, inside the one served pipeline.

The candidates (the spec's ``estimator.calibration``: sigmoid, isotonic) are judged on validation
scores of the training split — cross-validated decision values of the estimator, each calibrator
itself cross-validated on them — and ranked by Brier score, "none" included. The model is built
with the best one as ``transform -> CalibratedClassifierCV(estimator, ensemble=False)``: one
estimator fitted on all training rows plus a calibrator fitted on its cross-validated scores, so
serving, ONNX and the MLflow model stay one pipeline. A calibrated model is kept only if its ONNX
conversion reproduces scikit-learn (the serving parity check); otherwise the next best is tried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from feature_specs.spec import FeatureSpec
from feature_specs.transform import build_model

log = logging.getLogger(__name__)

FOLDS = 3
#: rows of the conversion probe fitted before a calibrated model is fitted on everything
PROBE_ROWS = 3000


@dataclass
class Calibration:
    method: str  # "none", "sigmoid" or "isotonic"
    brier: dict[str, float] = field(default_factory=dict)  # validation Brier score by method
    rejected: list[str] = field(default_factory=list)  # better on validation, but failed ONNX parity


def validation_brier(
    spec: FeatureSpec, params: dict[str, Any], x: pd.DataFrame, y: np.ndarray, seed: int
) -> dict[str, float]:
    """Brier score on cross-validated scores: uncalibrated and per candidate calibration."""
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    decision = cross_val_predict(build_model(spec, **params), x, y, cv=folds, method="decision_function")
    z = decision.reshape(-1, 1)
    out = {"none": float(brier_score_loss(y, 1 / (1 + np.exp(-decision))))}
    calibrators = {"sigmoid": LogisticRegression(C=1e6), "isotonic": IsotonicRegression(out_of_bounds="clip")}
    inner = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed + 1)
    for method in spec.estimator.calibration:
        how = "predict_proba" if method == "sigmoid" else "predict"
        calibrated = cross_val_predict(calibrators[method], z, y, cv=inner, method=how)
        out[method] = float(brier_score_loss(y, calibrated[:, 1] if calibrated.ndim == 2 else calibrated))
    return out


def calibrated_model(spec: FeatureSpec, params: dict[str, Any], method: str) -> Pipeline:
    """The shared transform + the estimator, calibrated with ``method`` ("none": as it is)."""
    model = build_model(spec, **params)
    if method == "none":
        return model
    # an int cv (unshuffled stratified folds) keeps the fitted model free of splitter objects skops must trust
    calibrated = CalibratedClassifierCV(model.named_steps["model"], method=method, cv=FOLDS, ensemble=False)
    return Pipeline([("transform", model.named_steps["transform"]), ("model", calibrated)])


def _sample(x: pd.DataFrame, y: np.ndarray, seed: int, rows: int = PROBE_ROWS) -> tuple[pd.DataFrame, np.ndarray]:
    if len(x) <= rows:
        return x, y
    picked = np.random.default_rng(seed).choice(len(x), size=rows, replace=False)
    return x.iloc[picked], y[picked]


def onnx_parity(spec: FeatureSpec, model: Pipeline) -> bool:
    """Whether serving's ONNX fast path reproduces this fitted model (the check serving makes at load)."""
    from predictors.runtime.scoring import Scorer

    return Scorer(spec, model).runtime == "onnxruntime"


def fit(
    spec: FeatureSpec, params: dict[str, Any], x: pd.DataFrame, y: np.ndarray, seed: int
) -> tuple[Pipeline, Calibration]:
    """Fit the served pipeline: calibrated where that lowers the validation Brier score."""
    if not spec.is_classifier or not spec.estimator.calibration:
        return build_model(spec, **params).fit(x, y), Calibration("none")
    brier = validation_brier(spec, params, x, y, seed)
    result = Calibration("none", brier)
    for method in sorted(brier, key=brier.__getitem__):
        # a cheap probe on a sample first: a calibration whose conversion differs is structural
        if method == "none" or onnx_parity(spec, calibrated_model(spec, params, method).fit(*_sample(x, y, seed))):
            model = calibrated_model(spec, params, method).fit(x, y)
            if method == "none" or onnx_parity(spec, model):
                result.method = method
                break
        result.rejected.append(method)
        log.warning("calibrate: %s lowers the Brier score but its ONNX conversion differs; not served", method)
    log.info("calibrate: validation Brier %s -> %s", {k: round(v, 5) for k, v in brier.items()}, result.method)
    return model, result
