"""The best achievable score of a synthetic row from what a model can see: its observed values.

The generator's truth (:attr:`Synthetic.truth`) knows values the model never sees: the fields it
blanks at random, the latent site activity of a forecast. Scoring with it is not achievable by any
model of the observed rows, so the limit a model is compared with is the generating process
integrated over what is hidden, given what is observed:

- classifiers: P(target | observed) — the true probability averaged over the hidden values, drawn
  from their distribution given the observed ones (importance-weighted where an observed field
  depends on the hidden one: a missing revenue still shows in the balance and the projects);
- regression (MAE): the median of the target given the observed values (the lag features measure
  the latent activity with known log-normal noise, so its posterior is normal in logs).

The hidden values are :data:`DRAWS` draws shared by every row (fixed seed), so the limit is a
deterministic function of a row's observed values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from feature_specs import processes as g

#: Monte Carlo draws of the hidden values (the limit's own noise is far below the bootstrap's)
DRAWS = 512


Columns = dict[str, np.ndarray]


def _draw_category(rng: np.random.Generator, effects: dict[str, float], weights: Sequence[float]) -> np.ndarray:
    return g.choice(rng, dict(zip(effects, weights, strict=True)), DRAWS)


def _fill(observed: np.ndarray, missing: np.ndarray, drawn: np.ndarray | float) -> np.ndarray:
    """The observed values with the missing ones replaced by a draw."""
    return np.where(missing, drawn, observed)


def _integrate(
    columns: Columns,
    hidden: Columns,
    completion: Callable[[int, Columns, Columns], tuple[Columns, np.ndarray | float]],
    probability: Callable[[Columns], np.ndarray],
) -> np.ndarray:
    """``probability`` of each row; where values are ``hidden``, its weighted mean over the
    :data:`DRAWS` completions (``completion(k, columns, hidden)`` -> filled columns, weights)."""
    rows = np.logical_or.reduce(list(hidden.values()))
    limit = np.empty(len(rows))
    limit[~rows] = probability({key: values[~rows] for key, values in columns.items()})
    columns = {key: values[rows] for key, values in columns.items()}
    hidden = {key: values[rows] for key, values in hidden.items()}
    weighted, weights = np.zeros(int(rows.sum())), np.zeros(int(rows.sum()))
    for k in range(DRAWS):
        filled, weight = completion(k, columns, hidden)
        weighted += weight * probability(filled)
        weights += weight
    limit[rows] = weighted / weights
    return limit


def _lead_score(frame: pd.DataFrame) -> np.ndarray:
    columns: Columns = {
        "industry": frame["customer_industry"].to_numpy(dtype=object),
        "value": frame["opportunity_value"].to_numpy(dtype=np.float64),
        "source": frame["lead_source"].to_numpy(dtype=object),
        "project": frame["project_type"].to_numpy(dtype=object),
        "existing": frame["existing_customer"].astype(bool).to_numpy(),
        "interactions": frame["interactions"].to_numpy(dtype=np.float64),
        "days": frame["days_since_first_contact"].to_numpy(dtype=np.float64),
    }
    hidden = {key: pd.isna(columns[key]) for key in ("source", "project", "interactions", "days")}
    rng = np.random.default_rng(0)
    source = _draw_category(rng, g.LEAD_SOURCE_EFFECT, g.LEAD_SOURCE_WEIGHT)
    project = _draw_category(rng, g.LEAD_PROJECT_EFFECT, g.LEAD_PROJECT_WEIGHT)
    interactions = {False: g.lead_interactions(rng, np.zeros(DRAWS, bool))}  # depend on the observed
    interactions[True] = g.lead_interactions(rng, np.ones(DRAWS, bool))  # existing_customer
    days = g.lead_days(rng, DRAWS)

    def completion(k: int, c: Columns, h: Columns) -> tuple[Columns, float]:
        drawn_interactions = np.where(c["existing"], interactions[True][k], interactions[False][k])
        return c | {
            "source": _fill(c["source"], h["source"], source[k]),
            "project": _fill(c["project"], h["project"], project[k]),
            "interactions": _fill(c["interactions"], h["interactions"], drawn_interactions),
            "days": _fill(c["days"], h["days"], days[k]),
        }, 1.0

    return _integrate(columns, hidden, completion, lambda c: g.sigmoid(g.lead_logit(c)))


def _revenue_weight(revenue: np.ndarray, age: np.ndarray, projects: np.ndarray) -> np.ndarray:
    """Importance weight of a hidden revenue drawn as ``balance / U(0.01, 0.12)`` (what the observed
    balance says of it): prior density x revenue x P(projects | revenue), up to a factor constant
    per row. The prior is the generator's log-normal mixture (the cap at 5e10 and a balance at its
    5e9 cap, both far rarer than one row in 100k, are left out)."""
    z = np.log(revenue / g.revenue_median(age)) / g.REVENUE_SIGMA
    z_big = z - np.log(g.CONGLOMERATE_FACTOR) / g.REVENUE_SIGMA
    prior_times_revenue = (1 - g.CONGLOMERATES) * np.exp(-0.5 * z**2) + g.CONGLOMERATES * np.exp(-0.5 * z_big**2)
    rate = 2 + np.log1p(revenue / 1e6)
    return prior_times_revenue * np.exp(projects * np.log(rate) - rate)


def _credit_risk(frame: pd.DataFrame) -> np.ndarray:
    columns: Columns = {
        "segment": frame["industry_segment"].to_numpy(dtype=object),
        "age": frame["company_age_years"].to_numpy(dtype=np.float64),
        "late_ratio": frame["late_payment_ratio_12m"].to_numpy(dtype=np.float64),
        "days_to_pay": frame["avg_days_to_pay"].to_numpy(dtype=np.float64),
        "revenue": frame["annual_revenue_eur"].to_numpy(dtype=np.float64),
        "utilisation": frame["credit_utilisation"].to_numpy(dtype=np.float64),
        "contract": frame["contract_type"].to_numpy(dtype=object),
        "retention": frame["retention_held"].to_numpy(dtype=object),
        "balance": np.maximum(frame["outstanding_balance_eur"].to_numpy(dtype=np.float64), 1.0),
        "projects": frame["active_projects"].to_numpy(dtype=np.float64),
    }
    hidden = {key: pd.isna(columns[key]) for key in ("revenue", "utilisation", "contract", "retention")}
    rng = np.random.default_rng(0)
    balance_share = rng.uniform(*g.BALANCE_SHARE, DRAWS)
    utilisation = g.credit_utilisation(rng, np.zeros(DRAWS))  # + 0.4 x late ratio, before the clip
    contract = _draw_category(rng, g.CREDIT_CONTRACT_EFFECT, g.CREDIT_CONTRACT_WEIGHT)
    retention = rng.random(DRAWS) < g.CREDIT_RETENTION_SHARE

    def completion(k: int, c: Columns, h: Columns) -> tuple[Columns, np.ndarray]:
        revenue = c["balance"] / balance_share[k]
        drawn_utilisation = np.clip(utilisation[k] + 0.4 * c["late_ratio"], 0, 5)
        filled = c | {
            "revenue": _fill(c["revenue"], h["revenue"], revenue),
            "utilisation": _fill(c["utilisation"], h["utilisation"], drawn_utilisation),
            "contract": _fill(c["contract"], h["contract"], contract[k]),
            "retention": _fill(c["retention"], h["retention"], retention[k]),
        }
        weight = np.where(h["revenue"], _revenue_weight(revenue, c["age"], c["projects"]), 1.0)
        return filled, weight

    return _integrate(columns, hidden, completion, lambda c: g.sigmoid(g.credit_logit(c)))


def _stock_demand(frame: pd.DataFrame) -> np.ndarray:
    """Each observed lag is ``scale * past season * activity * LogNormal(0, LAG_SIGMA)``: with the
    activity's prior LogNormal(0, ACTIVITY_SIGMA), its posterior in logs is normal; the target is
    ``scale * season * activity * LogNormal(-DEMAND_SIGMA**2 / 2, DEMAND_SIGMA)``, so its median
    given the lags is the exp of the posterior mean of its log."""
    week = frame["week_of_year"].to_numpy(dtype=np.float64)
    scale = g.stock_scale(
        frame["material_category"].to_numpy(dtype=object), frame["active_projects_region"].to_numpy(dtype=np.float64)
    )
    precision = np.full(len(frame), 1 / g.ACTIVITY_SIGMA**2)
    weighted_sum = np.zeros(len(frame))
    for name, weeks_back in (("demand_lag_1w", 1), ("demand_lag_2w", 2), ("demand_lag_4w", 4)):
        lag = frame[name].to_numpy(dtype=np.float64)
        seen = ~np.isnan(lag)
        log_activity = np.log(np.maximum(np.nan_to_num(lag), 0.5) / (scale * g.stock_season(week - weeks_back)))
        precision += seen / g.LAG_SIGMA**2
        weighted_sum += np.where(seen, log_activity, 0.0) / g.LAG_SIGMA**2
    log_median = np.log(scale * g.stock_season(week)) + weighted_sum / precision - 0.5 * g.DEMAND_SIGMA**2
    return np.exp(log_median)


_LIMITS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "credit_risk": _credit_risk,
    "lead_score": _lead_score,
    "stock_demand": _stock_demand,
}


def best_achievable(name: str, frame: pd.DataFrame) -> np.ndarray:
    """The best score of each row that any model of its observed values can give (see the module
    docstring): P(target | observed) for classifiers, the median of the target for regression."""
    return _LIMITS[name](frame)
