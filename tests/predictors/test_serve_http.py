"""`python -m predictors` as a real process on a real port, called over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feature_specs import spec_names
from tests.helpers import free_port, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = model_dirs["credit_risk"].parent
    port = free_port()
    env = os.environ | {"CONSTRUCTOS_MODEL_URI_TEMPLATE": str(root / "{model}")}
    cmd = [sys.executable, "-m", "predictors", f"--http_port={port}", f"--grpc_port={free_port()}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_model_answers_over_http(server: str) -> None:
    models = httpx.get(f"{server}/v2/models").json()["models"]
    assert sorted(models) == sorted(spec_names())
    answer = httpx.get(f"{server}/api/v1/predict/lead_score", params={"industry": "Construction", "value": 5_000_000})
    assert answer.status_code == 200 and 0 <= answer.json()["probability"] <= 1
    body = {
        "inputs": [
            {"name": "material_category", "shape": [1], "datatype": "BYTES", "data": ["cement"]},
            {"name": "region", "shape": [1], "datatype": "BYTES", "data": ["south"]},
            {"name": "week_of_year", "shape": [1], "datatype": "INT64", "data": [23]},
            {"name": "active_projects_region", "shape": [1], "datatype": "INT64", "data": [55]},
            {"name": "demand_lag_1w", "shape": [1], "datatype": "FP64", "data": [410.0]},
            {"name": "demand_lag_2w", "shape": [1], "datatype": "FP64", "data": [395.0]},
            {"name": "unit_price_eur", "shape": [1], "datatype": "FP64", "data": [9.4]},
        ]
    }
    response = httpx.post(f"{server}/v2/models/stock_demand/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][1]["name"] == "units"
    # no CONSTRUCTOS_ADMIN_TOKEN: the model repository extension is off, the model keeps serving
    assert httpx.post(f"{server}/v2/repository/models/stock_demand/unload").status_code == 404
    assert httpx.get(f"{server}/v2/models/stock_demand/ready").status_code == 200
    bad = httpx.post(f"{server}/v2/models/stock_demand/infer", json={"inputs": body["inputs"][:2]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("week_of_year: required feature is missing")


def test_prometheus_metrics_are_exposed(server: str) -> None:
    assert "request_predict_seconds" in httpx.get(f"{server}/metrics").text


def test_single_model_with_explicit_uri(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Also: the access log is off by default and on with CONSTRUCTOS_ACCESS_LOG (one line per request)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "predictors",
        "--model_name=credit_risk",
        f"--model_uri={model_dirs['credit_risk']}",
        f"--http_port={port}",
        "--enable_grpc=false",
    ]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=os.environ | {"CONSTRUCTOS_ACCESS_LOG": "true"}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert httpx.get(f"{url}/v2/models").json()["models"] == ["credit_risk"]
        assert httpx.get(f"{url}/v2/models/credit_risk").json()["versions"] == ["1"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert '"GET /v2/models/credit_risk HTTP/1.1" 200' in log.read_text()


def test_access_log_is_off_unless_asked_for() -> None:
    check = (
        "import logging; from predictors.__main__ import configure_logging; "
        "access = logging.getLogger('uvicorn.access'); "
        "configure_logging(None); off = access.isEnabledFor(logging.INFO); "
        "configure_logging(None, access_log=True); print(off, access.isEnabledFor(logging.INFO))"
    )  # in a child process: KServe's logging configuration stops propagation to pytest's capture
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_a_model_that_cannot_load_is_retried_while_the_others_serve(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    for name in ("credit_risk", "lead_score"):
        shutil.copytree(model_dirs[name], tmp_path / name)
    port = free_port()
    env = os.environ | {
        "CONSTRUCTOS_MODEL_URI_TEMPLATE": str(tmp_path / "{model}"),
        "CONSTRUCTOS_LOAD_RETRY_SECONDS": "1",
    }
    cmd = [sys.executable, "-m", "predictors", f"--http_port={port}", "--enable_grpc=false"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert httpx.get(f"{url}/v2/models/stock_demand/ready").status_code == 503
        assert httpx.get(f"{url}/v2/models/credit_risk/ready").status_code == 200
        shutil.copytree(model_dirs["stock_demand"], tmp_path / "stock_demand")  # the registry catches up
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v2/models/stock_demand/ready").status_code != 200:
            assert time.monotonic() < deadline, "stock_demand never became ready"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
