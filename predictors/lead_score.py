"""Lead score (Sales): probability of winning an opportunity, plus a 0-100 score for the CRM."""

from __future__ import annotations

import numpy as np

from predictors.runtime.request_batch import Output
from predictors.runtime.spec_model import SpecModel


class LeadScoreModel(SpecModel):
    spec_name = "lead_score"

    def extra_outputs(self, scores: np.ndarray) -> list[Output]:
        return [("score", "INT64", np.rint(scores * 100).astype(np.int64))]
