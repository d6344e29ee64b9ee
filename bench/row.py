"""The serving benchmark's one row, and what the baselines score of it: the fitted estimator of
the trained pipeline and the row already transformed to its numeric array."""

from __future__ import annotations

from typing import Any

import pandas as pd

from feature_specs import Validator, load_spec
from predictors.runtime.loading import load_model

ROW = {
    "industry_segment": ("BYTES", "residential_builder"),
    "company_age_years": ("FP64", 7.5),
    "annual_revenue_eur": ("FP64", 4_200_000.0),
    "active_projects": ("INT64", 3),
    "avg_days_to_pay": ("FP64", 52.0),
    "late_payment_ratio_12m": ("FP64", 0.31),
    "outstanding_balance_eur": ("FP64", 310_000.0),
    "credit_utilisation": ("FP64", 0.86),
    "contract_type": ("BYTES", "fixed_price"),
    "retention_held": ("BOOL", True),
}


def estimator_and_row(name: str, model_dir: str) -> tuple[Any, Any]:
    """The estimator step of the trained pipeline, and the benchmark's row already transformed to
    its numeric array (what the stock pattern and MLServer score)."""
    pipeline = load_model(model_dir).pipeline
    row = Validator(load_spec(name)).columns({name: [value] for name, (_, value) in ROW.items()})
    return pipeline[-1], pipeline[0].transform(pd.DataFrame(row))
