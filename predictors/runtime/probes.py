"""Probe rows for the load-time ONNX check, built from the spec and the training reference.

Every row is a legal request (it passes the spec's :class:`~feature_specs.Validator`), and together
they reach where a converted model may part ways with scikit-learn:
- numbers: the spec's bounds, the training quantiles (``reference.json``) with their neighbours
  one ulp away and off-grid values between them, the estimator's own split thresholds ± one ulp,
  and missing values for optional features;
- categories: every listed category, a missing value for optional ones, an unlisted one where
  the spec allows unknown values; bools: true, false, missing.
Each feature is varied alone on a typical row, then random combinations mix them.
No model-specific generator is involved, so a new spec gets the same check as the demo models.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from feature_specs import Feature, FeatureSpec, Validator
from feature_specs.transform import inner_estimator

UNLISTED = "__probe_unlisted__"
_FALLBACK = [-1e6, -1000.0, -17.3, -1.0, -0.5, 0.0, 0.5, 1.0, 17.3, 1000.0, 1e6]


def _number_candidates(f: Feature, reference: dict[str, Any] | None, thresholds: list[float]) -> list[Any]:
    ref = (reference or {}).get("features", {}).get(f.name, {})
    grid = [float(e) for e in ref.get("edges", [])] + thresholds
    values: list[float] = []
    for x in grid:
        values += [x, float(np.nextafter(x, -np.inf)), float(np.nextafter(x, np.inf))]
    values += [(a + b) / 2 for a, b in itertools.pairwise(grid)]  # off-grid, between quantiles
    values += [x + 0.3 for x in grid]
    bounds = [b for b in (f.min, f.max) if b is not None]
    values += bounds
    if f.min is not None and f.max is not None:
        values += [*list(np.linspace(f.min, f.max, 7)), f.min + 0.173 * (f.max - f.min)]
    if not grid and not bounds:
        values += _FALLBACK
    low = -np.inf if f.min is None else f.min
    high = np.inf if f.max is None else f.max
    clipped = {float(np.clip(v, low, high)) for v in values if np.isfinite(v)}
    if f.dtype == "bool":
        out: list[Any] = [True, False]
    elif f.dtype == "int":
        out = sorted({int(np.floor(v)) for v in clipped} | {int(np.ceil(v)) for v in clipped})
        out = [v for v in out if low <= v <= high]
    else:
        out = sorted(clipped)
    return [*out, None] if f.optional else out


def _category_candidates(f: Feature) -> list[Any]:
    out: list[Any] = list(f.categories or ())
    if f.allow_unknown:
        out.append(UNLISTED)
    return [*out, None] if f.optional else out


def split_thresholds(estimator: Any) -> dict[int, list[float]]:
    """The numeric split thresholds of a tree ensemble per input column (empty if it has none)."""
    found: dict[int, set[float]] = {}
    for iteration in getattr(inner_estimator(estimator), "_predictors", []):
        for tree in iteration:
            nodes = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
            for column, threshold in zip(nodes["feature_idx"], nodes["num_threshold"], strict=True):
                found.setdefault(int(column), set()).add(float(threshold))
    return {column: sorted(values) for column, values in found.items()}


def probe_columns(
    spec: FeatureSpec,
    reference: dict[str, Any] | None = None,
    thresholds: dict[int, list[float]] | None = None,
    *,
    random_rows: int = 512,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Validated probe columns (as serving sees them). ``thresholds`` are per numeric feature in
    spec order (the shared transform passes numbers through as its first columns)."""
    numeric = [f for f in spec.features if f.numeric]
    per_column = thresholds or {}
    candidates: dict[str, list[Any]] = {}
    for f in spec.features:
        if f.numeric:
            candidates[f.name] = _number_candidates(f, reference, per_column.get(numeric.index(f), []))
        else:
            candidates[f.name] = _category_candidates(f)
    present = {name: [v for v in values if v is not None] for name, values in candidates.items()}
    typical = {name: values[len(values) // 2] for name, values in present.items()}
    rows: list[dict[str, Any]] = []
    for name, values in candidates.items():  # one feature at a time
        rows += [typical | {name: v} for v in values]
    rng = np.random.default_rng(seed)
    for _ in range(random_rows):  # combinations
        rows.append({name: values[rng.integers(len(values))] for name, values in candidates.items()})
    columns = {name: [row[name] for row in rows] for name in candidates}
    return Validator(spec, max_batch=len(rows)).columns(columns)
