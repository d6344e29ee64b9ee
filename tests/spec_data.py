"""Rows for any spec, so the test suite covers every discovered model.

The demo models have a generating process (``feature_specs.synthetic``); a model added by
dropping a YAML file has not, so its rows are drawn from the spec itself: every feature inside
its range or categories, some optional values missing, and a target that depends on the
features (monotone where the spec says so), so a trained model has something to learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_specs import FeatureSpec, load_spec
from feature_specs.synthetic import generate, has_generator


def rows(name: str, n: int, *, seed: int = 0) -> pd.DataFrame:
    """``n`` rows (features + target) of model ``name``."""
    if has_generator(name):
        return generate(name, n, seed=seed).frame
    return spec_rows(load_spec(name), n, seed=seed)


def spec_rows(spec: FeatureSpec, n: int, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    signal = np.zeros(n)
    for f in spec.features:
        sign = -1.0 if f.monotone == "decreasing" else 1.0
        if f.dtype == "category":
            categories = list(f.categories or ())
            values = rng.choice(categories, n).astype(object)
            effect = dict(zip(categories, rng.normal(0, 0.6, len(categories)), strict=True))
            signal += np.array([effect[c] for c in values])
        elif f.dtype == "bool":
            flags = rng.random(n) < 0.5
            signal += sign * 0.5 * flags
            values = flags.astype(object)
        else:
            low = f.min if f.min is not None else 0.0
            high = f.max if f.max is not None else low + 100.0
            numbers = low + (high - low) * rng.beta(1.5, 4.0, n)
            if f.dtype == "int":
                numbers = np.floor(numbers)
            signal += sign * rng.uniform(0.4, 1.0) * (numbers - numbers.mean()) / (numbers.std() + 1e-12)
            values = numbers
        if f.optional:
            blank = rng.random(n) < 0.05
            if isinstance(values, np.ndarray) and values.dtype.kind == "f":
                values = np.where(blank, np.nan, values)
            else:
                values = np.where(blank, None, values).astype(object)
        columns[f.name] = values
    noisy = signal / (signal.std() + 1e-12) + rng.normal(0, 0.5, n)
    if spec.is_classifier:
        target: np.ndarray = rng.random(n) < 1 / (1 + np.exp(-(noisy - 1.0)))
    else:
        low = spec.target.min if spec.target.min is not None else 0.0
        high = spec.target.max if spec.target.max is not None else low + 1000.0
        target = low + (high - low) / (1 + np.exp(-noisy))
    return pd.DataFrame({**columns, spec.target.name: target})
