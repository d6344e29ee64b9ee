"""Seeded synthetic ConstructOS data with a known generating process.

Each generator returns the observed rows (with realistic mess: skewed categories, heavy-tailed
money amounts, missing optional values, a few outliers) and the *truth* behind each row — the
true default/win probability or the expected demand, knowing also what the rows do not show — so
a trained model can be judged against the best achievable metric (:func:`best_metrics`, from
:mod:`feature_specs.limits`: the truth integrated over what the model cannot see).
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

from feature_specs.processes import DEMAND_SIGMA, GENERATORS
from feature_specs.spec import FeatureSpec, load_spec


@dataclass(frozen=True)
class Synthetic:
    spec: FeatureSpec
    frame: pd.DataFrame  # feature columns + target column; NaN/None where a value is missing
    truth: np.ndarray  # true P(target) / E[target], knowing hidden values too (the limit: limits.py)


def has_generator(name: str) -> bool:
    """Whether ``name`` is one of the demo models with a synthetic generating process."""
    return name in GENERATORS


def generate(name: str, n: int, *, seed: int = 0) -> Synthetic:
    """``n`` rows for model ``name`` drawn from its generating process, reproducibly."""
    spec = load_spec(name)
    if name not in GENERATORS:
        raise LookupError(
            f"{name}: no synthetic generator (only {', '.join(GENERATORS)} have one); "
            f"land real rows or publish events to its topic '{spec.source_topic}'"
        )
    rng = np.random.default_rng(seed)
    cols, truth = GENERATORS[name](rng, n)
    if spec.is_classifier:
        target: np.ndarray = rng.random(n) < truth
    else:
        target = np.clip(truth * rng.lognormal(-0.5 * DEMAND_SIGMA**2, DEMAND_SIGMA, n), 0, None).round(0)
    frame = pd.DataFrame({**cols, spec.target.name: target})
    return Synthetic(spec, frame, truth)


def best_metrics(data: Synthetic) -> dict[str, float]:
    """The best achievable metric on these rows: scored with the generating process given what a
    model can see (:func:`feature_specs.limits.best_achievable`) — Bayes-optimal ROC/PR AUC for
    classifiers, the MAE of the conditional median for regression."""
    from feature_specs.limits import best_achievable

    y = data.frame[data.spec.target.name].to_numpy()
    best = best_achievable(data.spec.name, data.frame)
    if data.spec.is_classifier:
        return {"roc_auc": float(roc_auc_score(y, best)), "pr_auc": float(average_precision_score(y, best))}
    return {"mae": float(mean_absolute_error(y, best))}


def write_truth(truth_dir: Path, model: str, event_ids: Any, truth: np.ndarray) -> Path:
    """Keep the best achievable score of landed synthetic rows by event id, so evaluate can score
    it on exactly the holdout rows the model is scored on."""
    folder = truth_dir / model
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.parquet"
    pd.DataFrame({"event_id": np.asarray(event_ids, dtype=str), "truth": truth}).to_parquet(path, index=False)
    return path


def read_truth(truth_dir: Path, model: str) -> pd.Series | None:
    """The best achievable score of every landed synthetic row of ``model`` by event id, or None."""
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
