"""The generating processes of the demo models' synthetic rows: how each true value is drawn and
how the target depends on them (shared by :mod:`feature_specs.synthetic`, which draws rows, and
:mod:`feature_specs.limits`, which integrates over the values a row does not show)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    p = np.array(list(weights.values()))
    return rng.choice(np.array(list(weights), dtype=object), size=n, p=p / p.sum())


def _blank(rng: np.random.Generator, values: np.ndarray, share: float) -> np.ndarray:
    """Blank out a share of values (None for text, NaN for numbers)."""
    out = values.astype(object) if values.dtype == object else values.astype(np.float64)
    out[rng.random(len(out)) < share] = None if out.dtype == object else np.nan
    return out


CREDIT_SEGMENT_EFFECT = {
    "general_contractor": 0.0,
    "civil_engineering": -0.3,
    "residential_builder": 0.4,
    "commercial_builder": 0.1,
    "specialty_trade": 0.5,
    "developer": 0.8,
}
CREDIT_SEGMENT_WEIGHT = [30, 15, 20, 15, 15, 5]
CREDIT_CONTRACT_EFFECT = {"fixed_price": 0.0, "cost_plus": -0.2, "time_and_materials": 0.1, "unit_price": 0.2}
CREDIT_CONTRACT_WEIGHT = [45, 20, 20, 15]
CREDIT_RETENTION_SHARE = 0.4
#: revenue: LogNormal(ln(5e6 * (1 + age / 30)), 1.2), x200 for a few conglomerates, capped at 5e10;
#: the outstanding balance: revenue x U(0.01, 0.12), capped at 5e9
REVENUE_SIGMA, CONGLOMERATES, CONGLOMERATE_FACTOR, BALANCE_SHARE = 1.2, 0.002, 200.0, (0.01, 0.12)


def revenue_median(age: np.ndarray) -> np.ndarray:
    return 5e6 * (1 + age / 30)


def credit_revenue(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Annual revenue given the company's age."""
    n = len(age)
    revenue = rng.lognormal(np.log(5e6), REVENUE_SIGMA, n) * (1 + age / 30)
    revenue[rng.random(n) < CONGLOMERATES] *= CONGLOMERATE_FACTOR  # a few conglomerates
    return np.minimum(revenue, 5e10)  # the largest builders: tens of billions, inside the contract


def credit_utilisation(rng: np.random.Generator, late_ratio: np.ndarray) -> np.ndarray:
    return np.clip(rng.beta(2.5, 3, len(late_ratio)) * 1.4 + 0.4 * late_ratio, 0, 5)


def credit_logit(c: dict[str, np.ndarray]) -> np.ndarray:
    """Log-odds of default from the company's true values (``revenue``, ``utilisation``, ...)."""
    return (
        -3.0
        + lookup(CREDIT_SEGMENT_EFFECT, c["segment"])
        - 0.45 * (np.log1p(c["age"]) - np.log1p(12))
        - 0.2 * (np.log(c["revenue"]) - np.log(5e6))
        + 4.0 * (c["late_ratio"] - 0.25)
        + 0.02 * (c["days_to_pay"] - 50)
        + 1.3 * (c["utilisation"] - 0.8)
        + lookup(CREDIT_CONTRACT_EFFECT, c["contract"])
        - 0.35 * c["retention"].astype(np.float64)
    )


def lookup(effects: dict[str, float], values: np.ndarray) -> np.ndarray:
    return np.vectorize(effects.get, otypes=[np.float64])(values)


def _credit_risk(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    segment = choice(rng, dict(zip(CREDIT_SEGMENT_EFFECT, CREDIT_SEGMENT_WEIGHT, strict=True)), n)
    age = np.clip(rng.lognormal(np.log(12), 0.8, n), 0.2, 150).round(1)
    revenue = credit_revenue(rng, age)
    projects = rng.poisson(2 + np.log1p(revenue / 1e6))
    late_ratio = rng.beta(2, 6, n)
    days_to_pay = np.clip(rng.gamma(6, 6, n) + 60 * late_ratio, 1, 720).round(0)
    utilisation = credit_utilisation(rng, late_ratio)
    balance = np.minimum(revenue * rng.uniform(*BALANCE_SHARE, n), 5e9).round(2)
    contract = choice(rng, dict(zip(CREDIT_CONTRACT_EFFECT, CREDIT_CONTRACT_WEIGHT, strict=True)), n)
    retention = rng.random(n) < CREDIT_RETENTION_SHARE

    logit = credit_logit(
        {
            "segment": segment,
            "age": age,
            "revenue": revenue,
            "late_ratio": late_ratio,
            "days_to_pay": days_to_pay,
            "utilisation": utilisation,
            "contract": contract,
            "retention": retention,
        }
    )
    revenue_seen = _blank(rng, revenue.round(0), 0.06)
    revenue_seen[age < 1.5] = np.nan  # young companies have not reported yet
    cols = {
        "industry_segment": segment,
        "company_age_years": age,
        "annual_revenue_eur": revenue_seen,
        "active_projects": projects,
        "avg_days_to_pay": days_to_pay,
        "late_payment_ratio_12m": late_ratio.round(3),
        "outstanding_balance_eur": balance,
        "credit_utilisation": _blank(rng, utilisation.round(3), 0.1),
        "contract_type": _blank(rng, contract, 0.04),
        "retention_held": _blank(rng, retention.astype(object), 0.03),
    }
    return cols, sigmoid(logit)


MATERIAL_BASE = {
    "cement": 320.0,
    "rebar": 210.0,
    "lumber": 260.0,
    "aggregates": 520.0,
    "bricks": 400.0,
    "drywall": 150.0,
    "insulation": 110.0,
    "pipes": 80.0,
}
MATERIAL_PRICE = {
    "cement": 9.5,
    "rebar": 1.1,
    "lumber": 14.0,
    "aggregates": 28.0,
    "bricks": 0.6,
    "drywall": 12.0,
    "insulation": 22.0,
    "pipes": 35.0,
}


#: log-normal spreads: latent site activity, each lag's noise around it, the demand around its expectation
ACTIVITY_SIGMA, LAG_SIGMA, DEMAND_SIGMA = 0.35, 0.18, 0.15


def stock_season(week: np.ndarray) -> np.ndarray:
    return 1.0 + 0.35 * np.sin(2 * np.pi * (week - 12) / 52)


def stock_scale(material: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Weekly demand of a material in a region at average site activity and no season."""
    return lookup(MATERIAL_BASE, material) * (0.4 + active / 60)


def _stock_demand(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    material = choice(rng, dict(zip(MATERIAL_BASE, [20, 15, 12, 18, 12, 9, 8, 6], strict=True)), n)
    region_projects = {"north": 35, "south": 55, "east": 30, "west": 45, "central": 70}
    region = choice(rng, dict(zip(region_projects, [18, 26, 14, 20, 22], strict=True)), n)
    week = rng.integers(1, 53, n)
    active = np.asarray(rng.poisson(np.vectorize(region_projects.get)(region)), dtype=np.int64)
    activity = rng.lognormal(0, ACTIVITY_SIGMA, n)  # latent site activity, seen only through the lags
    level = stock_scale(material, active) * activity

    def lag(weeks_back: int) -> np.ndarray:
        return np.clip(level * stock_season(week - weeks_back) * rng.lognormal(0, LAG_SIGMA, n), 0, 1e6).round(0)

    expected = level * stock_season(week)
    price = np.vectorize(MATERIAL_PRICE.get)(material) * rng.lognormal(0, 0.08, n)
    lead_time = np.clip(rng.gamma(4, 2.5, n), 1, 180).round(0)
    cols = {
        "material_category": material,
        "region": region,
        "week_of_year": week,
        "active_projects_region": active,
        "demand_lag_1w": lag(1),
        "demand_lag_2w": lag(2),
        "demand_lag_4w": _blank(rng, lag(4), 0.08),
        "unit_price_eur": price.round(2),
        "supplier_lead_time_days": _blank(rng, lead_time, 0.12),
    }
    return cols, expected


LEAD_INDUSTRY_EFFECT = {
    "Construction": 0.3,
    "Real Estate": 0.1,
    "Infrastructure": 0.0,
    "Energy": -0.2,
    "Manufacturing": -0.1,
    "Public Sector": -0.4,
    "Retail": -0.3,
    "Other": -0.6,
}
LEAD_SOURCE_EFFECT = {
    "referral": 0.8,
    "website": 0.0,
    "trade_show": 0.2,
    "cold_call": -0.7,
    "tender_portal": -0.3,
    "partner": 0.5,
}
LEAD_SOURCE_WEIGHT = [15, 30, 10, 20, 15, 10]
LEAD_PROJECT_EFFECT = {
    "residential": 0.1,
    "commercial": 0.0,
    "infrastructure": -0.2,
    "industrial": 0.0,
    "renovation": 0.3,
}
LEAD_PROJECT_WEIGHT = [30, 25, 15, 10, 20]


def lead_interactions(rng: np.random.Generator, existing: np.ndarray) -> np.ndarray:
    return rng.poisson(4 + 3 * existing.astype(np.float64))


def lead_days(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.gamma(2, 30, n), 0, 3650).round(0)


def lead_logit(c: dict[str, np.ndarray]) -> np.ndarray:
    """Log-odds of winning from the opportunity's true values (``source``, ``interactions``, ...)."""
    existing = c["existing"].astype(np.float64)
    log_value = np.log(c["value"] / 4e5)
    return (
        -1.6
        + lookup(LEAD_INDUSTRY_EFFECT, c["industry"])
        + 0.15 * log_value
        + 0.25 * existing * log_value
        + lookup(LEAD_SOURCE_EFFECT, c["source"])
        + lookup(LEAD_PROJECT_EFFECT, c["project"])
        + 0.9 * existing
        + 0.6 * np.log1p(c["interactions"])
        - 0.006 * (c["days"] - 60)
    )


def _lead_score(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    industry = choice(rng, dict(zip(LEAD_INDUSTRY_EFFECT, [35, 15, 15, 8, 10, 10, 5, 2], strict=True)), n)
    value = np.clip(rng.lognormal(np.log(4e5), 1.3, n), 5e3, 5e9).round(-2)
    source = choice(rng, dict(zip(LEAD_SOURCE_EFFECT, LEAD_SOURCE_WEIGHT, strict=True)), n)
    region = choice(rng, {"north": 18, "south": 26, "east": 14, "west": 20, "central": 22}, n)
    project = choice(rng, dict(zip(LEAD_PROJECT_EFFECT, LEAD_PROJECT_WEIGHT, strict=True)), n)
    existing = rng.random(n) < 0.3
    interactions = lead_interactions(rng, existing)
    days = lead_days(rng, n)
    logit = lead_logit(
        {
            "industry": industry,
            "value": value,
            "source": source,
            "project": project,
            "existing": existing,
            "interactions": interactions,
            "days": days,
        }
    )
    cols = {
        "customer_industry": industry,
        "opportunity_value": value,
        "lead_source": _blank(rng, source, 0.1),
        "region": _blank(rng, region, 0.05),
        "project_type": _blank(rng, project, 0.08),
        "interactions": _blank(rng, interactions, 0.05),
        "days_since_first_contact": _blank(rng, days, 0.05),
        "existing_customer": existing.astype(object),
    }
    return cols, sigmoid(logit)


GENERATORS: dict[str, Callable[[np.random.Generator, int], tuple[dict[str, Any], np.ndarray]]] = {
    "credit_risk": _credit_risk,
    "stock_demand": _stock_demand,
    "lead_score": _lead_score,
}
