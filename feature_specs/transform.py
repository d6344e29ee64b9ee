"""The one transform shared by training and serving: spec -> scikit-learn pipeline.

Input: the DataFrame :class:`~feature_specs.validation.Validator` returns (spec column order,
numbers as float64 with NaN where the spec imputes the training median, categories as text).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from feature_specs.spec import FeatureSpec


def derived_part() -> FunctionTransformer:
    """A derived feature's column: the row mean of its columns as given (before imputation), a
    missing value left out. The function is numpy's own, so the model file names no code of ours."""
    return FunctionTransformer(np.nanmean, kw_args={"axis": 1, "keepdims": True})


def build_transform(spec: FeatureSpec) -> ColumnTransformer:
    """Median-impute numbers, one-hot encode categories (fixed vocabulary from the spec), then the
    spec's derived features (``derived``: one column each, computed from the raw numbers)."""
    numeric = [f.name for f in spec.features if f.numeric]
    categorical = [f for f in spec.features if not f.numeric]
    derived = [(f"derived_{d.name}", derived_part(), list(d.mean_of)) for d in spec.derived]
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


def build_model(spec: FeatureSpec, **params: Any) -> Pipeline:
    """The full training pipeline: shared transform + the spec's estimator.

    ``params`` override the spec's estimator defaults (pipeline hyperparameters).
    """
    settings = {**spec.estimator.params, **params}
    estimator_cls = HistGradientBoostingClassifier if spec.is_classifier else HistGradientBoostingRegressor
    estimator: Any = estimator_cls(monotonic_cst=monotonic_constraints(spec), random_state=0, **settings)
    if spec.estimator.target_transform == "log1p":  # increasing: the monotone constraints still hold
        estimator = TransformedTargetRegressor(estimator, func=np.log1p, inverse_func=np.expm1, check_inverse=False)
    return Pipeline([("transform", build_transform(spec)), ("model", estimator)])


def inner_estimator(model: Any) -> Any:
    """The tree ensemble of a pipeline's last step (inside a target transform, if the spec has one)."""
    if isinstance(model, TransformedTargetRegressor):
        return model.regressor_ if hasattr(model, "regressor_") else model.regressor
    return model


#: Types in a fitted model that skops (MLflow's sklearn format, no pickle) must be told to trust:
#: our own training pipeline produced them. Pass as ``skops_trusted_types`` when logging/saving.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    # derived features (the spec's ``derived``): numpy's row mean inside a FunctionTransformer
    "numpy.nanmean",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # probability calibration inside the served pipeline (CalibratedClassifierCV)
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
]
