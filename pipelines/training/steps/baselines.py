"""What every candidate must beat on the same holdout: scikit-learn's untuned default estimator on
the shared transform and, for forecasts whose spec has lags of the target, the naive last-value
forecast; and, where a generator knows it, the best achievable (the synthetic truth given what the
rows show, :mod:`feature_specs.limits`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from feature_specs.spec import FeatureSpec
from feature_specs.synthetic import read_truth
from feature_specs.transform import build_transform


def default_model(spec: FeatureSpec) -> Pipeline:
    """The shared transform + scikit-learn's estimator with its defaults (no spec params, no constraints)."""
    estimator = HistGradientBoostingClassifier if spec.is_classifier else HistGradientBoostingRegressor
    return Pipeline([("transform", build_transform(spec)), ("model", estimator(random_state=0))])


def last_value_feature(spec: FeatureSpec) -> str | None:
    """The spec's most recent lag of the target (``target_lag``), if it has one."""
    lags = [f for f in spec.features if f.target_lag is not None]
    return min(lags, key=lambda f: f.target_lag or 0).name if lags and not spec.is_classifier else None


def naive_forecast(spec: FeatureSpec, x: pd.DataFrame) -> np.ndarray | None:
    """Predict the last observed value (missing lags: the median of the others)."""
    name = last_value_feature(spec)
    if name is None:
        return None
    values = x[name].to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), np.nanmedian(values), values)


def truth_dir(data_dir: Path) -> Path:
    """Where landed synthetic rows keep their truth (beside the landing store)."""
    return data_dir / "synthetic_truth"


def holdout_best_achievable(data_dir: Path, spec: FeatureSpec, holdout: pd.DataFrame) -> np.ndarray | None:
    """The generating process's best score (P(target | observed) / median of the target) for exactly
    these holdout rows, or None when the rows are not all synthetic rows with a known truth."""
    if "event_id" not in holdout:
        return None
    truth = read_truth(truth_dir(data_dir), spec.name)
    if truth is None:
        return None
    found = truth.reindex(holdout["event_id"].astype(str))
    return None if found.isna().any() else found.to_numpy(dtype=np.float64)
