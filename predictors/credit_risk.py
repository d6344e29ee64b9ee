"""Credit risk (Finance): probability of default within 90 days, plus a letter grade."""

from __future__ import annotations

import numpy as np

from predictors.runtime.request_batch import Output
from predictors.runtime.spec_model import SpecModel

#: upper probability bound of each grade, best first; above the last bound is grade E.
GRADE_BOUNDS = np.array([0.02, 0.05, 0.10, 0.25])  # an array: searchsorted converts a tuple on every call
GRADES = np.array(["A", "B", "C", "D", "E"], dtype=object)


class CreditRiskModel(SpecModel):
    spec_name = "credit_risk"

    def extra_outputs(self, scores: np.ndarray) -> list[Output]:
        return [("risk_grade", "BYTES", GRADES[np.searchsorted(GRADE_BOUNDS, scores, side="right")])]
