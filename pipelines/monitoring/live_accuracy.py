"""Live accuracy: ground truth joined with the predictions that were served, by request id.

**Outcome events** (one JSON object per scored row, on the model's ``spec.outcome_topic``)::

    {"event_id": "8f0c…", "model": "credit_risk", "request_id": "req-42", "row": 0,
     "actual": true, "occurred_at": "2026-11-02T10:00:00+00:00"}

``request_id`` is the id of the scoring request (V2 ``id``, the ``x-request-id`` header, or the
id in the response); ``row`` (default 0) is the row's position in a batch request; ``actual`` is
a bool for classifiers and a number for regression models. ``python -m pipelines.monitoring.outcomes``
publishes them.

**Join.** Predictions from the inference log are kept in a bounded sqlite table under the data dir
(:class:`PredictionStore`): ground truth often arrives days after the prediction (a payment is late
after 90 days), so the store must outlive a restart and hold more rows than memory should — an
in-memory LRU would forget everything on every deploy. Each prediction takes its label once, so a
replayed outcome is not counted twice. Joined pairs feed a rolling window per model version and
role (:class:`RollingAccuracy`) whose metrics are the gate's own
(:func:`pipelines.training.steps.metrics.compute_metrics`), checked against the spec's floors and ceilings.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from feature_specs.spec import FeatureSpec


@dataclass(frozen=True)
class OutcomeEvent:
    event_id: str
    model: str
    request_id: str
    actual: float
    row: int = 0


def parse_outcome(raw: bytes | str, spec: FeatureSpec) -> OutcomeEvent:
    """One outcome event, checked; a malformed one raises ValueError naming the field."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    for name in ("event_id", "request_id"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise ValueError(f"{name}: a non-empty string is required")
    if body.get("model") != spec.name:
        raise ValueError(f"model: expected {spec.name!r}, got {body.get('model')!r}")
    actual, row = body.get("actual"), body.get("row", 0)
    if spec.is_classifier:
        if not isinstance(actual, bool):
            raise ValueError("actual: a boolean is required")
    elif isinstance(actual, bool) or not isinstance(actual, int | float) or not math.isfinite(actual):
        raise ValueError("actual: a finite number is required")
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        raise ValueError("row: a non-negative integer is required")
    return OutcomeEvent(body["event_id"], spec.name, body["request_id"], float(actual), row)


@dataclass(frozen=True)
class Labelled:
    version: str
    role: str
    score: float
    actual: float


class PredictionStore:
    """Recent predictions (one row per scored row, version and role), at most ``max_rows``."""

    def __init__(self, path: Path, max_rows: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.db = sqlite3.connect(path, check_same_thread=False)  # the consumer writes; /metrics and tests read
        self._lock = threading.Lock()
        self.db.executescript(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS predictions (
                model TEXT NOT NULL, request_id TEXT NOT NULL, row INTEGER NOT NULL,
                version TEXT NOT NULL, role TEXT NOT NULL, score REAL NOT NULL, actual REAL, at REAL NOT NULL,
                UNIQUE (model, request_id, row, version, role));
            """
        )

    def add(self, model: str, request_id: str, version: str, role: str, scores: Iterable[float]) -> None:
        now = time.time()
        rows = [(model, request_id, i, version, role, float(s), now) for i, s in enumerate(scores)]
        with self._lock, self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO predictions (model, request_id, row, version, role, score, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.db.execute(
                "DELETE FROM predictions WHERE rowid <= (SELECT MAX(rowid) FROM predictions) - ?", (self.max_rows,)
            )

    def label(self, outcome: OutcomeEvent) -> list[Labelled]:
        """Give the outcome to its predictions that have none yet; returns them (empty: unknown
        request, evicted, or labelled before)."""
        key = (outcome.model, outcome.request_id, outcome.row)
        with self._lock, self.db:
            found = self.db.execute(
                "SELECT version, role, score FROM predictions"
                " WHERE model = ? AND request_id = ? AND row = ? AND actual IS NULL",
                key,
            ).fetchall()
            self.db.execute(
                "UPDATE predictions SET actual = ? WHERE model = ? AND request_id = ? AND row = ? AND actual IS NULL",
                (outcome.actual, *key),
            )
        return [Labelled(str(v), str(r), float(s), outcome.actual) for v, r, s in found]

    def __len__(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def live_metrics(spec: FeatureSpec, actual: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The gate's metrics on labelled live rows; {} while they cannot be computed (no rows, or one class)."""
    from pipelines.training.steps.metrics import compute_metrics

    if len(actual) == 0 or (spec.is_classifier and len(set(actual.tolist())) < 2):
        return {}
    y = actual.astype(bool) if spec.is_classifier else actual
    return {k: v for k, v in compute_metrics(spec, y, score).items() if math.isfinite(v)}


def breaches(spec: FeatureSpec, metrics: dict[str, float]) -> list[str]:
    """The spec's floors and ceilings the live metrics break, in words."""
    out = [f"live {n} {metrics[n]:.4f} < floor {f:g}" for n, f in spec.gate.floors.items() if metrics.get(n, f) < f]
    out += [
        f"live {n} {metrics[n]:.4f} > ceiling {c:g}" for n, c in spec.gate.ceilings.items() if metrics.get(n, c) > c
    ]
    return out


class RollingAccuracy:
    """The last ``size`` labelled rows per (model, version, role)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._pairs: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}

    def add(self, model: str, labelled: Labelled) -> tuple[str, str, str]:
        key = (model, labelled.version, labelled.role)
        self._pairs.setdefault(key, deque(maxlen=self.size)).append((labelled.score, labelled.actual))
        return key

    def labels(self, key: tuple[str, str, str]) -> int:
        return len(self._pairs.get(key, ()))

    def metrics(self, spec: FeatureSpec, key: tuple[str, str, str]) -> dict[str, float]:
        pairs = np.array(self._pairs.get(key, ()), dtype=np.float64).reshape(-1, 2)
        return live_metrics(spec, pairs[:, 1], pairs[:, 0])


def outcome_event(model: str, request_id: str, actual: bool | float, *, row: int = 0, **extra: Any) -> dict[str, Any]:
    """A new outcome event (fresh id, current time) in the documented format."""
    return {
        "event_id": str(uuid.uuid4()),
        "model": model,
        "request_id": request_id,
        "row": row,
        "actual": actual,
        "occurred_at": datetime.now(UTC).isoformat(),
        **extra,
    }
