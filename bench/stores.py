"""The local store next to the production-like stores of ``make stores-up``, same run, same rows.

    python -m bench.stores [--rows 100000] [--model credit_risk] [--parts 20 --part-rows 5000]

- **landing**: committing Parquet parts (the landing's write: one conditional create per part)
  and reading them back (the extract step's read), in rows/s, ``file://`` vs ``s3://``;
- **pipeline**: the whole kfp.local run per step: local folder + MLflow on sqlite, next to landing
  and artifacts on S3 + MLflow on PostgreSQL/S3 (through its tracking server).

The stores are read from ``CONSTRUCTOS_STORES_ENV`` (``make bench`` sets it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from bench.pipeline import STEPS, step_seconds

STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "CONSTRUCTOS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def stores_env() -> dict[str, str]:
    path = Path(os.environ.get("CONSTRUCTOS_STORES_ENV", "data/stores/stores.env"))
    if not path.exists():
        raise SystemExit(f"bench.stores: {path} not found: run `make stores-up` first")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@contextlib.contextmanager
def world(data_dir: str, env: dict[str, str]) -> Iterator[None]:
    """Settings for one side of the comparison (restored afterwards)."""
    from pipelines.settings import get_settings

    names = {"CONSTRUCTOS_DATA_DIR", "CONSTRUCTOS_LANDING_URI", "CONSTRUCTOS_ARTIFACTS_URI", *STORE_VARIABLES}
    with mock.patch.dict(os.environ):  # the whole environment comes back afterwards
        for k in names:
            os.environ.pop(k, None)
        os.environ.update({"CONSTRUCTOS_DATA_DIR": data_dir, **env})
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def landing(parts: int, part_rows: int, model: str) -> dict[str, float]:
    """Rows/s committing ``parts`` parts of ``part_rows`` rows, then reading them all back."""
    from feature_specs.spec import load_spec
    from feature_specs.synthetic import generate
    from pipelines.demo import landing_frame
    from pipelines.settings import get_settings
    from pipelines.streaming.landing import parts as landing_parts

    frame = landing_frame(load_spec(model), generate(model, part_rows, seed=1).frame)
    store = get_settings().landing_store
    started = time.perf_counter()
    for _ in range(parts):
        frame["event_id"] = [uuid.uuid4().hex for _ in range(len(frame))]
        landing_parts.write_part(store, model, frame)
    written = time.perf_counter() - started
    started = time.perf_counter()
    rows = len(landing_parts.read_landed(store, model))
    read = time.perf_counter() - started
    assert rows == parts * part_rows, rows
    return {"write": rows / written, "read": rows / read}


def pipeline(model: str, rows: int) -> dict[str, float]:
    from pipelines.demo import land_synthetic
    from pipelines.training.run import run_local

    land_synthetic(model, rows, seed=rows)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            summary = run_local(model)
    except RuntimeError:
        print(captured.getvalue()[-4000:], file=sys.stderr)
        raise
    times = step_seconds(captured.getvalue())
    times["total"] = summary.seconds
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", default="credit_risk")
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--part-rows", type=int, default=5_000)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args(argv)
    env = stores_env()
    tag = uuid.uuid4().hex[:8]
    bucket = env["CONSTRUCTOS_STORES_BUCKET"]
    s3 = {k: env[k] for k in STORE_VARIABLES} | {
        "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
        "CONSTRUCTOS_LANDING_URI": f"s3://{bucket}/bench/{tag}/landing",
        "CONSTRUCTOS_ARTIFACTS_URI": f"s3://{bucket}/bench/{tag}/artifacts",
    }
    results: dict[str, dict[str, dict[str, float]]] = {"local": {}, "s3": {}}
    for side, extra in (("local", {}), ("s3", s3)):
        with tempfile.TemporaryDirectory() as tmp:
            with world(tmp, extra):
                results[side]["landing"] = landing(args.parts, args.part_rows, args.model)
            if not args.skip_pipeline:
                with world(str(Path(tmp) / "pipeline"), extra):
                    results[side]["pipeline"] = pipeline(args.model, args.rows)
    total = args.parts * args.part_rows
    print(f"landing: {args.parts} parts x {args.part_rows:,} rows ({total:,} rows), rows/s")
    print(f"{'store':>8} {'write':>10} {'read':>10}")
    for side in results:
        r = results[side]["landing"]
        print(f"{side:>8} {r['write']:>10,.0f} {r['read']:>10,.0f}")
    if not args.skip_pipeline:
        print(f"pipeline wall time per step (s), {args.model}, {args.rows:,} rows")
        print(f"{'store':>8} " + " ".join(f"{s:>9}" for s in (*STEPS, "total")))
        for side in results:
            t = results[side]["pipeline"]
            print(f"{side:>8} " + " ".join(f"{t.get(s, float('nan')):>9.1f}" for s in (*STEPS, "total")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
