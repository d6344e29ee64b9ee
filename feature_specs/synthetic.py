"""Seeded synthetic ConstructOS data with a known generating process.

Each generator returns the observed rows (with realistic mess: skewed categories, heavy-tailed
money amounts, missing optional values, a few outliers) and the *truth* behind each row — the
true default/win probability or the expected demand — so a trained model can be judged against
the best achievable metric (:func:`best_metrics`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, mean_absolute_error, roc_auc_score

from feature_specs.spec import FeatureSpec, load_spec


@dataclass(frozen=True)
class Synthetic:
    spec: FeatureSpec
    frame: pd.DataFrame  # feature columns + target column; NaN/None where a value is missing
    truth: np.ndarray  # true P(target) for classifiers, E[target] for regression


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    p = np.array(list(weights.values()))
    return rng.choice(np.array(list(weights), dtype=object), size=n, p=p / p.sum())


def _blank(rng: np.random.Generator, values: np.ndarray, share: float) -> np.ndarray:
    """Blank out a share of values (None for text, NaN for numbers)."""
    out = values.astype(object) if values.dtype == object else values.astype(np.float64)
    out[rng.random(len(out)) < share] = None if out.dtype == object else np.nan
    return out


def _credit_risk(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    segment_effect = {
        "general_contractor": 0.0,
        "civil_engineering": -0.3,
        "residential_builder": 0.4,
        "commercial_builder": 0.1,
        "specialty_trade": 0.5,
        "developer": 0.8,
    }
    segment = _choice(rng, dict(zip(segment_effect, [30, 15, 20, 15, 15, 5], strict=True)), n)
    age = np.clip(rng.lognormal(np.log(12), 0.8, n), 0.2, 150).round(1)
    revenue = rng.lognormal(np.log(5e6), 1.2, n) * (1 + age / 30)
    revenue[rng.random(n) < 0.002] *= 200  # a few conglomerates
    revenue = np.minimum(revenue, 5e10)  # the largest builders: tens of billions, inside the contract
    projects = rng.poisson(2 + np.log1p(revenue / 1e6))
    late_ratio = rng.beta(2, 6, n)
    days_to_pay = np.clip(rng.gamma(6, 6, n) + 60 * late_ratio, 1, 720).round(0)
    utilisation = np.clip(rng.beta(2.5, 3, n) * 1.4 + 0.4 * late_ratio, 0, 5)
    balance = np.minimum(revenue * rng.uniform(0.01, 0.12, n), 5e9).round(2)
    contract_effect = {"fixed_price": 0.0, "cost_plus": -0.2, "time_and_materials": 0.1, "unit_price": 0.2}
    contract = _choice(rng, dict(zip(contract_effect, [45, 20, 20, 15], strict=True)), n)
    retention = rng.random(n) < 0.4

    logit = (
        -3.0
        + np.vectorize(segment_effect.get)(segment)
        - 0.45 * (np.log1p(age) - np.log1p(12))
        - 0.2 * (np.log(revenue) - np.log(5e6))
        + 4.0 * (late_ratio - 0.25)
        + 0.02 * (days_to_pay - 50)
        + 1.3 * (utilisation - 0.8)
        + np.vectorize(contract_effect.get)(contract)
        - 0.35 * retention
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
    return cols, _sigmoid(logit)


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


def _stock_demand(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    material = _choice(rng, dict(zip(MATERIAL_BASE, [20, 15, 12, 18, 12, 9, 8, 6], strict=True)), n)
    region_projects = {"north": 35, "south": 55, "east": 30, "west": 45, "central": 70}
    region = _choice(rng, dict(zip(region_projects, [18, 26, 14, 20, 22], strict=True)), n)
    week = rng.integers(1, 53, n)
    active = np.asarray(rng.poisson(np.vectorize(region_projects.get)(region)), dtype=np.int64)
    base = np.vectorize(MATERIAL_BASE.get)(material)
    season = 1.0 + 0.35 * np.sin(2 * np.pi * (week - 12) / 52)
    activity = rng.lognormal(0, 0.35, n)  # latent site activity, seen only through the lags
    level = base * (0.4 + active / 60) * activity

    def lag(weeks_back: int) -> np.ndarray:
        past_season = 1.0 + 0.35 * np.sin(2 * np.pi * (week - weeks_back - 12) / 52)
        return np.clip(level * past_season * rng.lognormal(0, 0.18, n), 0, 1e6).round(0)

    expected = level * season
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


def _lead_score(rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray]:
    industry_effect = {
        "Construction": 0.3,
        "Real Estate": 0.1,
        "Infrastructure": 0.0,
        "Energy": -0.2,
        "Manufacturing": -0.1,
        "Public Sector": -0.4,
        "Retail": -0.3,
        "Other": -0.6,
    }
    industry = _choice(rng, dict(zip(industry_effect, [35, 15, 15, 8, 10, 10, 5, 2], strict=True)), n)
    value = np.clip(rng.lognormal(np.log(4e5), 1.3, n), 5e3, 5e9).round(-2)
    source_effect = {
        "referral": 0.8,
        "website": 0.0,
        "trade_show": 0.2,
        "cold_call": -0.7,
        "tender_portal": -0.3,
        "partner": 0.5,
    }
    source = _choice(rng, dict(zip(source_effect, [15, 30, 10, 20, 15, 10], strict=True)), n)
    region = _choice(rng, {"north": 18, "south": 26, "east": 14, "west": 20, "central": 22}, n)
    project_effect = {
        "residential": 0.1,
        "commercial": 0.0,
        "infrastructure": -0.2,
        "industrial": 0.0,
        "renovation": 0.3,
    }
    project = _choice(rng, dict(zip(project_effect, [30, 25, 15, 10, 20], strict=True)), n)
    existing = rng.random(n) < 0.3
    interactions = rng.poisson(4 + 3 * existing)
    days = np.clip(rng.gamma(2, 30, n), 0, 3650).round(0)

    log_value = np.log(value / 4e5)
    logit = (
        -1.6
        + np.vectorize(industry_effect.get)(industry)
        + 0.15 * log_value
        + 0.25 * existing * log_value
        + np.vectorize(source_effect.get)(source)
        + np.vectorize(project_effect.get)(project)
        + 0.9 * existing
        + 0.6 * np.log1p(interactions)
        - 0.006 * (days - 60)
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
    return cols, _sigmoid(logit)


_GENERATORS: dict[str, Callable[[np.random.Generator, int], tuple[dict[str, Any], np.ndarray]]] = {
    "credit_risk": _credit_risk,
    "stock_demand": _stock_demand,
    "lead_score": _lead_score,
}


def has_generator(name: str) -> bool:
    """Whether ``name`` is one of the demo models with a synthetic generating process."""
    return name in _GENERATORS


def generate(name: str, n: int, *, seed: int = 0) -> Synthetic:
    """``n`` rows for model ``name`` drawn from its generating process, reproducibly."""
    spec = load_spec(name)
    if name not in _GENERATORS:
        raise LookupError(
            f"{name}: no synthetic generator (only {', '.join(_GENERATORS)} have one); "
            f"land real rows or publish events to its topic '{spec.source_topic}'"
        )
    rng = np.random.default_rng(seed)
    cols, truth = _GENERATORS[name](rng, n)
    if spec.is_classifier:
        target: np.ndarray = rng.random(n) < truth
    else:
        target = np.clip(truth * rng.lognormal(-0.5 * 0.15**2, 0.15, n), 0, None).round(0)
    frame = pd.DataFrame({**cols, spec.target.name: target})
    return Synthetic(spec, frame, truth)


def best_metrics(data: Synthetic) -> dict[str, float]:
    """The best achievable metric on these rows: scoring with the true generating process.

    Classifiers: Bayes-optimal ROC/PR AUC. Regression: MAE of the true expected value (a noise
    floor; it knows the latent activity a model only sees through the lags).
    """
    y = data.frame[data.spec.target.name].to_numpy()
    if data.spec.is_classifier:
        return {"roc_auc": float(roc_auc_score(y, data.truth)), "pr_auc": float(average_precision_score(y, data.truth))}
    return {"mae": float(mean_absolute_error(y, data.truth))}


def write_truth(truth_dir: Path, model: str, event_ids: Any, truth: np.ndarray) -> Path:
    """Keep the truth of landed synthetic rows by event id, so evaluate can score the best
    achievable on exactly the holdout rows the model is scored on."""
    folder = truth_dir / model
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.parquet"
    pd.DataFrame({"event_id": np.asarray(event_ids, dtype=str), "truth": truth}).to_parquet(path, index=False)
    return path


def read_truth(truth_dir: Path, model: str) -> pd.Series | None:
    """The truth of every landed synthetic row of ``model`` by event id, or None if there is none."""
    parts = sorted((truth_dir / model).glob("*.parquet"))
    if not parts:
        return None
    frame = pd.concat([pd.read_parquet(p) for p in parts]).drop_duplicates("event_id", keep="last")
    return frame.set_index("event_id")["truth"]


_PII_FAKES: dict[str, Callable[[np.random.Generator, int], str]] = {
    "customer_name": lambda r, i: f"Bau {['Nord', 'Sud', 'Ost', 'West'][r.integers(4)]} GmbH #{i}",
    "tax_id": lambda r, i: f"DE{r.integers(100_000_000, 999_999_999)}",
    "recorded_by": lambda r, i: f"clerk{r.integers(1, 40)}@example.com",
    "contact_name": lambda r, i: f"Contact {i}",
    "contact_email": lambda r, i: f"contact{i}@example.com",
}


def to_events(data: Synthetic, *, seed: int = 0, start: datetime | None = None) -> list[dict[str, Any]]:
    """Rows as the ERP services publish them: event id, time, PII fields, features, target."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    ints = {f.name for f in data.spec.features if f.dtype == "int"}
    clean = data.frame.astype(object).where(data.frame.notna(), None)
    events = []
    for i, row in enumerate(clean.to_dict("records")):
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            "occurred_at": (start + timedelta(minutes=i)).isoformat(),
        }
        event.update({p: _PII_FAKES[p](rng, i) for p in data.spec.pii_names})
        for k, v in row.items():
            v = v.item() if hasattr(v, "item") else v
            event[k] = int(v) if k in ints and v is not None else v
        events.append(event)
    return events
