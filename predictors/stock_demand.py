"""Stock demand (Inventory): expected units next week, plus whole units to order."""

from __future__ import annotations

import numpy as np

from predictors.runtime.request_batch import Output
from predictors.runtime.spec_model import SpecModel


class StockDemandModel(SpecModel):
    spec_name = "stock_demand"

    def extra_outputs(self, scores: np.ndarray) -> list[Output]:
        return [("units", "INT64", np.ceil(np.clip(scores, 0, None)).astype(np.int64))]
