"""Data drift: a window of live model inputs compared with the training reference, feature by feature.

* Numbers (and bools): population stability index (PSI) on the reference's own quantile bins,
  binned with :func:`feature_specs.reference.bin_frequencies` so live and training data are cut
  exactly alike. PSI is a few lines of numpy; no library needed.
* Categories: Jensen-Shannon distance (base 2, 0..1) of the category shares, with
  ``scipy.spatial.distance.jensenshannon`` (scipy is already installed with scikit-learn).
* A missing value is a bin of its own in both cases: a feature that suddenly arrives empty drifts.

Thresholds come from the spec (``drift.psi_threshold``, ``drift.js_threshold``); a window drifts
when at least ``drift.min_drifted_features`` features do. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.spatial.distance import jensenshannon

from feature_specs.reference import bin_frequencies, category_frequencies
from feature_specs.spec import FeatureSpec

EPSILON = 1e-4
"""Floor of a bin's share in PSI: an empty bin would make the logarithm infinite."""


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    e = np.clip(np.asarray(expected, dtype=np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2: 0 = same, 1 = disjoint) of two share tables."""
    keys = sorted(set(expected) | set(actual))
    p = np.array([expected.get(k, 0.0) for k in keys])
    q = np.array([actual.get(k, 0.0) for k in keys])
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    return float(jensenshannon(p, q, base=2))


def _with_missing(frequencies: Sequence[float], missing: float) -> list[float]:
    """Shares of the present values scaled to the whole, plus a last bin for the missing ones."""
    return [f * (1.0 - missing) for f in frequencies] + [missing]


def numeric_distribution(reference: Mapping[str, Any], values: Sequence[Any]) -> list[float]:
    """Live values on a numeric reference entry's bins (missing last), comparable with
    :func:`reference_distribution`."""
    array = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    missing = float(np.isnan(array).mean()) if array.size else 0.0
    return _with_missing(bin_frequencies(reference["edges"], array), missing)


def reference_distribution(reference: Mapping[str, Any]) -> list[float]:
    return _with_missing(reference["frequencies"], float(reference.get("missing", 0.0)))


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: Literal["psi", "js"]
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold


@dataclass(frozen=True)
class WindowDrift:
    model: str
    version: str
    rows: int
    features: list[FeatureDrift] = field(default_factory=list)
    min_drifted: int = 1

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    @property
    def drifted(self) -> bool:
        return len(self.drifted_features) >= self.min_drifted

    def reason(self) -> str:
        parts = [f"{f.feature} {f.method}={f.value:.3f}>{f.threshold:g}" for f in self.drifted_features]
        return f"drift in {self.rows} rows of version {self.version}: " + (", ".join(parts) or "none")


def feature_drift(spec: FeatureSpec, name: str, reference: Mapping[str, Any], values: Sequence[Any]) -> FeatureDrift:
    """One feature's live ``values`` against its reference entry."""
    if reference["kind"] == "numeric":
        value = psi(reference_distribution(reference), numeric_distribution(reference, values))
        return FeatureDrift(name, "psi", value, spec.drift.psi_threshold)
    live = category_frequencies(list(spec.feature(name).categories or ()), list(values))
    missing = sum(v is None for v in values) / max(len(values), 1)
    expected = {k: v * (1 - reference.get("missing", 0.0)) for k, v in reference["frequencies"].items()}
    actual = {k: v * (1 - missing) for k, v in live.items()}
    expected["__missing__"], actual["__missing__"] = float(reference.get("missing", 0.0)), missing
    return FeatureDrift(name, "js", js_distance(expected, actual), spec.drift.js_threshold)


def window_drift(
    spec: FeatureSpec, version: str, reference: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]
) -> WindowDrift:
    """Every spec feature of a window (``{feature: values}``) against the training reference."""
    rows = len(next(iter(columns.values()), []))
    found = [
        feature_drift(spec, f.name, reference["features"][f.name], columns[f.name])
        for f in spec.features
        if f.name in columns and f.name in reference["features"]
    ]
    return WindowDrift(spec.name, version, rows, found, spec.drift.min_drifted_features)


def score_shift(reference: Mapping[str, Any], scores: Sequence[float]) -> float:
    """PSI of live scores against the training scores (prediction drift)."""
    return psi(reference_distribution(reference["scores"]), numeric_distribution(reference["scores"], scores))


class Windows:
    """Collects live rows per (model, version) and hands them out in windows of ``size(model)`` rows."""

    def __init__(self, size: Mapping[str, int]) -> None:
        self.size = size
        self._rows: dict[tuple[str, str], dict[str, list[Any]]] = {}

    def add(
        self, model: str, version: str, inputs: Mapping[str, Sequence[Any]], scores: Sequence[float]
    ) -> list[dict[str, list[Any]]]:
        """Add a batch; returns the windows it completed (columns + ``__score__``)."""
        buffer = self._rows.setdefault((model, version), {})
        for name, values in [*inputs.items(), ("__score__", scores)]:
            buffer.setdefault(name, []).extend(values)
        size, full = self.size[model], []
        while len(buffer.get("__score__", [])) >= size:
            full.append({name: values[:size] for name, values in buffer.items()})
            for values in buffer.values():
                del values[:size]
        return full

    def pending(self, model: str, version: str) -> int:
        return len(self._rows.get((model, version), {}).get("__score__", []))
