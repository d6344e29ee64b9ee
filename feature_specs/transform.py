"""The one transform shared by training and serving: spec -> scikit-learn pipeline.

Input: the DataFrame :class:`~feature_specs.validation.Validator` returns (spec column order,
numbers as float64 with NaN where the spec imputes the training median, categories as text).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from feature_specs.spec import DerivedFeature, FeatureSpec


def derived_part(log1p: bool = False) -> FunctionTransformer | Pipeline:
    """A derived feature's column: the row mean of its columns as given (before imputation), a
    missing value left out; with ``log1p`` the row mean of their log1p. The functions are numpy's
    own, so the model file names no code of ours for them."""
    mean = FunctionTransformer(np.nanmean, kw_args={"axis": 1, "keepdims": True})
    return Pipeline([("log1p", FunctionTransformer(np.log1p)), ("mean", mean)]) if log1p else mean


def _derived(d: DerivedFeature) -> tuple[str, FunctionTransformer | Pipeline, list[str]]:
    return f"derived_{d.name}", derived_part(d.log1p), list(d.mean_of)


def build_transform(spec: FeatureSpec) -> ColumnTransformer:
    """Median-impute numbers, one-hot encode categories (fixed vocabulary from the spec), then the
    spec's derived features (``derived``: one column each, computed from the raw numbers)."""
    numeric = [f.name for f in spec.features if f.numeric]
    categorical = [f for f in spec.features if not f.numeric]
    derived = [_derived(d) for d in spec.derived]
    return ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median", keep_empty_features=True), numeric),
            (
                "cat",
                OneHotEncoder(
                    categories=[list(f.categories or ()) for f in categorical],
                    handle_unknown="ignore",
                    sparse_output=False,
                    dtype=np.float64,
                ),
                [f.name for f in categorical],
            ),
            *derived,
        ],
        verbose_feature_names_out=False,
    )


def monotonic_constraints(spec: FeatureSpec) -> list[int]:
    """Per transformed column: +1/-1 where the spec declares a monotone effect, else 0."""
    sign = {"increasing": 1, "decreasing": -1, None: 0}
    numeric = [sign[f.monotone] for f in spec.features if f.numeric]
    one_hot = sum(len(f.categories or ()) for f in spec.features if not f.numeric)
    return numeric + [0] * one_hot + [sign[d.monotone] for d in spec.derived]


class OffsetRegressor(RegressorMixin, BaseEstimator):
    """``regressor`` fitted to the target minus input column ``column`` (the spec's
    ``estimator.offset``); the prediction is the regressor's plus that column. Where the column is
    already most of the answer (a forecast from its lags), the trees fit only the departures from
    it, which vary slowly, instead of a steep function of one binned feature."""

    def __init__(self, regressor: Any = None, column: int = -1) -> None:
        self.regressor = regressor
        self.column = column

    def fit(self, X: Any, y: Any, **fit_params: Any) -> OffsetRegressor:
        x = np.asarray(X, dtype=np.float64)
        self.regressor_ = clone(self.regressor).fit(x, np.asarray(y) - x[:, self.column], **fit_params)
        return self

    def predict(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=np.float64)
        return self.regressor_.predict(x) + x[:, self.column]


def offset_column(spec: FeatureSpec) -> int | None:
    """The transformed column of the spec's ``estimator.offset`` (a derived feature), if it has one."""
    if spec.estimator.offset is None:
        return None
    derived = [d.name for d in spec.derived]
    return len(monotonic_constraints(spec)) - len(derived) + derived.index(spec.estimator.offset)


def build_model(spec: FeatureSpec, **params: Any) -> Pipeline:
    """The full training pipeline: shared transform + the spec's estimator.

    ``params`` override the spec's estimator defaults (pipeline hyperparameters).
    """
    settings = {**spec.estimator.params, **params}
    estimator_cls = HistGradientBoostingClassifier if spec.is_classifier else HistGradientBoostingRegressor
    estimator: Any = estimator_cls(monotonic_cst=monotonic_constraints(spec), random_state=0, **settings)
    column = offset_column(spec)
    if column is not None:  # rises with its features (the spec refuses a decreasing one): constraints hold
        estimator = OffsetRegressor(estimator, column)
    if spec.estimator.target_transform == "log1p":  # increasing: the monotone constraints still hold
        estimator = TransformedTargetRegressor(estimator, func=np.log1p, inverse_func=np.expm1, check_inverse=False)
    return Pipeline([("transform", build_transform(spec)), ("model", estimator)])


def inner_estimator(model: Any) -> Any:
    """The tree ensemble of a pipeline's last step (inside a target transform and an offset, if the
    spec has them)."""
    for wrapper in (TransformedTargetRegressor, OffsetRegressor):
        if isinstance(model, wrapper):
            model = model.regressor_ if hasattr(model, "regressor_") else model.regressor
    return model


#: Types in a fitted model that skops (MLflow's sklearn format, no pickle) must be told to trust:
#: our own training pipeline produced them. Pass as ``skops_trusted_types`` when logging/saving.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    # derived features (the spec's ``derived``): numpy's row mean (of log1p) inside FunctionTransformers
    "numpy.nanmean",
    # a forecast relative to a derived feature (the spec's ``estimator.offset``)
    "feature_specs.transform.OffsetRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # probability calibration inside the served pipeline (CalibratedClassifierCV)
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
]
