"""The predictor class of each model."""

from __future__ import annotations

from predictors.base import SpecModel
from predictors.credit_risk import CreditRiskModel
from predictors.lead_score import LeadScoreModel
from predictors.stock_demand import StockDemandModel

PREDICTORS: dict[str, type[SpecModel]] = {
    "credit_risk": CreditRiskModel,
    "stock_demand": StockDemandModel,
    "lead_score": LeadScoreModel,
}
