"""Serving from a real MLflow tracking server (HTTP registry + proxied artifacts), not a local file."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
        f"--artifacts-destination={root / 'artifacts'}",
        "--serve-artifacts",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--allowed-hosts=127.0.0.1:{port},localhost:{port}",
        "--workers=1",
    ]
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # MLflow 3 starts slowly on a busy machine
        while True:
            assert proc.poll() is None, "mlflow server exited"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


REGISTER = textwrap.dedent(
    """
    import mlflow, mlflow.sklearn
    from feature_specs import Validator, load_spec
    from feature_specs.synthetic import generate
    from feature_specs.transform import SKOPS_TRUSTED_TYPES, build_model

    spec = load_spec("lead_score")
    data = generate("lead_score", 3000, seed=5).frame
    x = Validator(spec, max_batch=3000).frame(data[spec.feature_names])
    model = build_model(spec).fit(x, data[spec.target.name])
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", registered_model_name="lead_score",
                                 skops_trusted_types=SKOPS_TRUSTED_TYPES, input_example=x.head(2))
    mlflow.MlflowClient().set_registered_model_alias("lead_score", "champion", "1")
    """
)


def test_predictor_loads_the_champion_from_an_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    env = os.environ | {"MLFLOW_TRACKING_URI": mlflow_server}
    subprocess.run([sys.executable, "-c", REGISTER], env=env, check=True, cwd=tmp_path, capture_output=True)
    port = free_port()
    cmd = [sys.executable, "-m", "predictors", "--model_name=lead_score", f"--http_port={port}", "--enable_grpc=false"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(url, proc)
            except (RuntimeError, TimeoutError) as exc:
                log.seek(0)
                raise AssertionError(
                    f"the predictor server did not start: {exc}\n{log.read()[-3000:].decode()}"
                ) from exc
            query = {"industry": "Construction", "value": 5e6}
            answer = httpx.get(f"{url}/api/v1/predict/lead_score", params=query).json()
            assert answer["model_version"] == "1" and 0 <= answer["probability"] <= 1
            assert httpx.get(f"{url}/v2/models/lead_score").json()["versions"] == ["1"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert not list(tmp_path.iterdir()), "nothing may be written to the working directory"
