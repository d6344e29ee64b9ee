"""Demo data and training: land synthetic rows the way the Kafka trigger would, train every model,
and compare each model's holdout metric with the best achievable (the generating process).

    python -m pipelines.demo [--rows 20000] [--models credit_risk ...] [--land-only]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from feature_specs.spec import SPEC_NAMES, FeatureSpec, load_spec
from feature_specs.synthetic import best_metrics, generate
from pipelines import landing
from pipelines.settings import get_settings

START = datetime(2026, 1, 1, tzinfo=UTC)


def contract_mask(spec: FeatureSpec, frame: pd.DataFrame) -> np.ndarray:
    """Rows the trigger would accept (in range, known categories); the rest would go to the DLQ."""
    keep = np.ones(len(frame), dtype=bool)
    for f in spec.features:
        column = frame[f.name]
        if f.dtype == "category" and not f.allow_unknown:
            keep &= (column.isna() | column.isin(f.categories or ())).to_numpy()
        elif f.dtype in ("float", "int"):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            keep &= np.isnan(values) | (
                (values >= (f.min if f.min is not None else -np.inf))
                & (values <= (f.max if f.max is not None else np.inf))
            )
    return keep


def landing_frame(spec: FeatureSpec, frame: pd.DataFrame, *, seed: int = 0, start: datetime = START) -> pd.DataFrame:
    """Synthetic rows in the landing layout: event id and times, features, target; never PII."""
    rng = np.random.default_rng(seed)
    kept = frame[contract_mask(spec, frame)].reset_index(drop=True)
    n = len(kept)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    occurred = pd.date_range(start, periods=n, freq="min").strftime("%Y-%m-%dT%H:%M:%S+00:00")
    meta = pd.DataFrame({"event_id": ids, "occurred_at": occurred, "landed_at": datetime.now(UTC).isoformat()})
    return pd.concat([meta, kept[[*spec.feature_names, spec.target.name]]], axis=1)


def land_synthetic(model: str, rows: int, *, seed: int = 0, root: Path | None = None) -> int:
    """Generate ``rows`` rows for ``model`` and land those inside the contract; returns the count."""
    spec = load_spec(model)
    frame = landing_frame(spec, generate(model, rows, seed=seed).frame, seed=seed)
    landing.write_part(root or get_settings().landing_dir, model, frame)
    return len(frame)


def ensure_landed(model: str, rows: int, *, seed: int = 0) -> int:
    """Land synthetic rows unless the model already has data; returns the landed row count."""
    root = get_settings().landing_dir
    if landing.parts(root, model):
        return len(landing.read(root, model))
    return land_synthetic(model, rows, seed=seed, root=root)


def train_all(models: list[str], rows: int, *, seed: int = 0) -> bool:
    """Land data where missing, run the pipeline per model, print metrics next to the best possible."""
    from pipelines.run import run_local

    ok = True
    for model in models:
        spec = load_spec(model)
        landed = ensure_landed(model, rows, seed=seed)
        print(f"== {model}: {landed:,} landed rows")
        summary = run_local(model)
        best = best_metrics(generate(model, rows, seed=seed))
        name = spec.gate.primary_metric
        print("\n".join(summary.lines()))
        print(f"  {name}: {summary.metrics[name]:.4f}, best achievable {best[name]:.4f} (synthetic truth)")
        ok &= summary.gate_passed
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows per model when none are landed")
    parser.add_argument("--models", nargs="+", choices=SPEC_NAMES, default=list(SPEC_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--land-only", action="store_true", help="only land synthetic rows where a model has none")
    args = parser.parse_args(argv)
    if args.land_only:
        for model in args.models:
            print(f"{model}: {ensure_landed(model, args.rows, seed=args.seed):,} landed rows")
        return 0
    return 0 if train_all(args.models, args.rows, seed=args.seed) else 1


if __name__ == "__main__":
    sys.exit(main())
