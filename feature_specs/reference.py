"""Training reference statistics: the distributions drift monitoring compares live traffic with.

Saved as ``reference.json`` at the top of every MLflow model directory. Numbers (and bools) are
binned by training quantiles; categories are counted per category. Bins are right-closed with
open ends: ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` for cut points ``edges``, so any live
value falls into a bin. Use :func:`bin_frequencies` / :func:`category_frequencies` on live data
to get numbers comparable with the reference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_specs.spec import FeatureSpec

REFERENCE_FILE = "reference.json"
OTHER = "__other__"  # categories outside the spec's list (only with ``allow_unknown``)


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner cut points at the 1/bins .. (bins-1)/bins quantiles, duplicates removed."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(c) for c in np.unique(cuts)]


def bin_frequencies(edges: Sequence[float], values: np.ndarray) -> list[float]:
    """Share of the non-missing ``values`` per bin (``len(edges) + 1`` bins)."""
    present = values[~np.isnan(values)]
    counts = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="left"), minlength=len(edges) + 1
    )
    return [float(c) for c in counts / max(present.size, 1)]


def category_frequencies(categories: Sequence[str], values: Sequence[Any]) -> dict[str, float]:
    """Share of the non-missing ``values`` per category; unlisted ones are counted as ``__other__``."""
    series = pd.Series(values, dtype=object).dropna()
    known = series.where(series.isin(categories), OTHER)
    counts = known.value_counts()
    total = max(len(series), 1)
    return {c: float(counts.get(c, 0)) / total for c in [*categories, OTHER]}


def _numeric(values: np.ndarray, bins: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    edges = quantile_edges(values, bins)
    return {
        "kind": "numeric",
        "edges": edges,
        "frequencies": bin_frequencies(edges, values),
        "missing": float(np.isnan(values).mean()) if values.size else 0.0,
    }


def build_reference(spec: FeatureSpec, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """Reference statistics of a training frame (the validated model input) and its scores."""
    features: dict[str, Any] = {}
    for f in spec.features:
        column = frame[f.name]
        if f.numeric:
            features[f.name] = _numeric(column.to_numpy(dtype=np.float64, na_value=np.nan), spec.drift.bins)
        else:
            features[f.name] = {
                "kind": "category",
                "frequencies": category_frequencies(list(f.categories or ()), list(column)),
                "missing": float(column.isna().mean()),
            }
    return {
        "spec_name": spec.name,
        "spec_version": spec.version,
        "rows": len(frame),
        "bins": spec.drift.bins,
        "features": features,
        "scores": _numeric(np.asarray(scores, dtype=np.float64), spec.drift.bins),
    }


def write_reference(reference: dict[str, Any], folder: Path) -> Path:
    path = folder / REFERENCE_FILE
    path.write_text(json.dumps(reference, indent=1, sort_keys=True))
    return path


def read_reference(model_dir: Path) -> dict[str, Any]:
    """The reference of a downloaded MLflow model directory."""
    return dict(json.loads((model_dir / REFERENCE_FILE).read_text()))
