"""The main job, ``make demo``: the whole platform on one machine, on embedded defaults.

1. land synthetic ConstructOS records (the way the Kafka trigger lands them) where a model has none,
2. run the training pipeline for every model with kfp.local (MLflow registry, gate, deploy),
   and print each model's metric next to the best achievable (the generating process),
3. serve the champions with the KServe ModelServer and call them over V2, V1 and the Sales
   Service's query string — and show a bad request being refused,
4. say where the MLflow UI, the Data Docs and the rendered InferenceServices are.

    python -m pipelines.demo [--rows 20000] [--models ...] [--land-only | --train-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_specs.limits import best_achievable
from feature_specs.spec import FeatureSpec, load_spec, spec_names
from feature_specs.synthetic import generate, has_generator, write_truth
from pipelines.settings import get_settings
from pipelines.storage import Store
from pipelines.streaming.landing import parts as landing_parts
from pipelines.training.steps.baselines import truth_dir

START = datetime(2026, 1, 1, tzinfo=UTC)


def landing_frame(spec: FeatureSpec, frame: pd.DataFrame, *, seed: int = 0, start: datetime = START) -> pd.DataFrame:
    """Synthetic rows in the landing layout: event id and times, features, target; never PII."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    occurred = pd.date_range(start, periods=n, freq="min").strftime("%Y-%m-%dT%H:%M:%S+00:00")
    meta = pd.DataFrame({"event_id": ids, "occurred_at": occurred, "landed_at": datetime.now(UTC).isoformat()})
    return pd.concat([meta, frame[[*spec.feature_names, spec.target.name]].reset_index(drop=True)], axis=1)


def land_synthetic(model: str, rows: int, *, seed: int = 0, root: Path | None = None) -> int:
    """Generate ``rows`` rows for ``model`` and land them (in ``root``, default the landing
    store: ``CONSTRUCTOS_LANDING_URI``, a folder or ``s3://``), with their best achievable score
    beside the data (for evaluate); returns the count."""
    spec = load_spec(model)
    data = generate(model, rows, seed=seed)
    frame = landing_frame(spec, data.frame, seed=seed)
    settings = get_settings()
    store = Store(root.resolve().as_uri()) if root else settings.landing_store
    landing_parts.write_part(store, model, frame)
    limit = best_achievable(model, data.frame)
    write_truth(truth_dir(root.parent if root else settings.data_dir), model, frame["event_id"], limit)
    return len(frame)


def ensure_landed(model: str, rows: int, *, seed: int = 0) -> int:
    """Land synthetic rows unless the model already has data; returns the landed row count."""
    store = get_settings().landing_store
    if landing_parts.part_keys(store, model):
        return len(landing_parts.read_landed(store, model))
    if not has_generator(model):
        raise NoData(
            f"{model}: no landed data in {store.uri}/{model} and no synthetic generator for it.\n"
            f"  Land rows first: publish events to its topic '{load_spec(model).source_topic}' with the trigger "
            f"running (make publish MODEL={model} FILE=rows.csv), or copy Parquet parts into that folder."
        )
    return land_synthetic(model, rows, seed=seed)


class NoData(Exception):
    """A model has no landed rows and no synthetic generator to make some."""


def train_all(models: list[str], rows: int, *, seed: int = 0, brief: bool = False) -> bool:
    """Land data where missing, run the pipeline per model, print metrics next to the best possible."""
    from pipelines.training.run import run_local

    ok = True
    for model in models:
        landed = ensure_landed(model, rows, seed=seed)
        print(f"\n== {model}: {landed:,} landed rows -> training pipeline (kfp.local)", flush=True)
        summary = run_local(model, brief=brief)
        print("\n".join(summary.lines()))  # with ours, the baselines and the best achievable on the same rows
        ok &= summary.gate_passed
    return ok


# -- serving ------------------------------------------------------------------------------

SAMPLE_CALLS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("Sales Service, query string", "GET", "/api/v1/predict/lead_score?industry=Construction&value=5000000", None),
    (
        "Finance, V1",
        "POST",
        "/v1/models/credit_risk:predict",
        {
            "instances": [
                {
                    "industry_segment": "developer",
                    "company_age_years": 3.0,
                    "active_projects": 2,
                    "avg_days_to_pay": 71.0,
                    "late_payment_ratio_12m": 0.4,
                    "outstanding_balance_eur": 250000.0,
                },
                {
                    "industry_segment": "civil_engineering",
                    "company_age_years": 41.0,
                    "annual_revenue_eur": 85_000_000.0,
                    "active_projects": 9,
                    "avg_days_to_pay": 28.0,
                    "late_payment_ratio_12m": 0.03,
                    "outstanding_balance_eur": 1_200_000.0,
                    "credit_utilisation": 0.35,
                },
            ]
        },
    ),
    (
        "Inventory, V2",
        "POST",
        "/v2/models/stock_demand/infer",
        {
            "id": "demo-1",
            "inputs": [
                {"name": "material_category", "shape": [2], "datatype": "BYTES", "data": ["cement", "rebar"]},
                {"name": "region", "shape": [2], "datatype": "BYTES", "data": ["south", "north"]},
                {"name": "week_of_year", "shape": [2], "datatype": "INT64", "data": [23, 48]},
                {"name": "active_projects_region", "shape": [2], "datatype": "INT64", "data": [55, 30]},
                {"name": "demand_lag_1w", "shape": [2], "datatype": "FP64", "data": [410.0, 160.0]},
                {"name": "demand_lag_2w", "shape": [2], "datatype": "FP64", "data": [395.0, 170.0]},
                {"name": "unit_price_eur", "shape": [2], "datatype": "FP64", "data": [9.4, 1.1]},
            ],
        },
    ),
    ("a client mistake", "GET", "/api/v1/predict/lead_score?industry=Mining&value=5000000", None),
]


@contextmanager
def serving(port: int, models: list[str]) -> Iterator[str]:
    """``python -m predictors`` (all champions) in the background, until the block ends."""
    import httpx

    log = get_settings().data_dir / "demo-server.log"
    cmd = [sys.executable, "-m", "predictors", f"--http_port={port}", "--enable_grpc=false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"KSERVE_LOGLEVEL": "WARNING"}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the model server stopped (exit {proc.returncode}); see {log}")
            try:
                if all(httpx.get(f"{url}/v2/models/{m}/ready", timeout=1).status_code == 200 for m in models):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the models did not become ready; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def call_models(url: str, models: list[str]) -> None:
    import httpx

    client = httpx.Client(base_url=url)
    client.get("/v2/health/ready")  # open the connection, as a service's client pool would
    for title, method, path, body in SAMPLE_CALLS:
        if not any(m in path for m in models):
            continue
        started = time.perf_counter()
        response = client.request(method, path, json=body)
        ms = (time.perf_counter() - started) * 1000
        print(f"\n-- {title}: {method} {path}  ->  {response.status_code} in {ms:.1f} ms")
        if body:
            print(f"   request:  {json.dumps(body)[:160]}{'...' if len(json.dumps(body)) > 160 else ''}")
        print(f"   response: {response.text}")


def where_things_are() -> None:
    data = get_settings().data_dir.resolve()
    docs = sorted(data.glob("kfp/*/validate/data_docs"))  # one self-contained HTML file per run
    isvcs = sorted(data.glob("kfp/**/deploy/inference_service*"))
    print("\nWhere to look next:")
    print("  MLflow UI:        make mlflow   ->  http://127.0.0.1:5000  (runs, metrics, plots, registered versions)")
    if docs:
        print(f"  Data Docs:        {docs[-1]}")
    if isvcs:
        print(f"  InferenceService: {isvcs[-1]}  (rendered by the deploy step)")
    call = "curl 'localhost:8080/api/v1/predict/lead_score?industry=Construction&value=5e6'"
    print(f"  Serve yourself:   make serve  ->  {call}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows per model when none are landed")
    parser.add_argument("--models", nargs="+", choices=spec_names(), default=list(spec_names()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("HTTP_PORT", "8080")))
    parser.add_argument("--land-only", action="store_true", help="only land synthetic rows where a model has none")
    parser.add_argument("--train-only", action="store_true", help="land and train, do not serve")
    args = parser.parse_args(argv)
    try:
        if args.land_only:
            for model in args.models:
                print(f"{model}: {ensure_landed(model, args.rows, seed=args.seed):,} landed rows")
            return 0
        print("ConstructOS ML platform demo: synthetic ERP data -> kfp pipelines -> MLflow -> KServe predictors")
        if not train_all(args.models, args.rows, seed=args.seed, brief=not args.train_only):
            print("\nA model failed its gate; see the reasons above.", file=sys.stderr)
            return 1
    except NoData as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.train_only:
        return 0
    print(f"\n== serving the champions on port {args.port} (KServe ModelServer)", flush=True)
    with serving(args.port, args.models) as url:
        call_models(url, args.models)
    where_things_are()
    return 0


if __name__ == "__main__":
    sys.exit(main())
