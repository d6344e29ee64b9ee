"""Smoke test of the built platform image (``make image`` then ``make image-test``).

Runs inside the image with ``buildah run`` (chroot isolation, the host's network): the
ModelServer answers a V2 call on a model mounted into it, the trigger and monitoring entry points
start, one step of the compiled pipeline runs the way the KFP launcher runs it (the IR's own
command and arguments, ``{{$}}`` replaced by an executor input built from the IR, artifacts under
``/minio``), as UID 10001, with no compiler and no pip inside. ``CONSTRUCTOS_TEST_IMAGE`` names
the image; without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from feature_specs import load_spec
from pipelines.demo import land_synthetic
from pipelines.settings import Settings
from pipelines.training.compile import compile_all
from tests.helpers import free_port
from tests.pipelines.monitoring.test_monitoring_kafka import raw_columns, v2_request

IMAGE = os.environ.get("CONSTRUCTOS_TEST_IMAGE", "")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(not IMAGE or not shutil.which("buildah"), reason="set CONSTRUCTOS_TEST_IMAGE (make image-test)"),
]
MODEL = "credit_risk"


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image (removed afterwards)."""
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    subprocess.run([*BUILDAH, "from", "--pull-never", "--name", name, IMAGE], check=True, capture_output=True)
    yield name
    subprocess.run([*BUILDAH, "rm", name], check=False, capture_output=True)


def command(
    ctr: str, *args: str, volumes: dict[Path, str] | None = None, env: dict[str, str] | None = None
) -> list[str]:
    mounts = [f"--volume={host}:{inside}" for host, inside in (volumes or {}).items()]
    envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return [*BUILDAH, "run", "--isolation", "chroot", *mounts, *envs, ctr, "--", *args]


def run(ctr: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(ctr, *args, **kw), capture_output=True, text=True, timeout=600, check=False)


def test_runs_as_uid_10001_without_compilers_or_pip(container: str) -> None:
    user = subprocess.run([*BUILDAH, "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", IMAGE],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert user.stdout.strip() == "10001:10001"
    assert run(container, "id", "-u").stdout.strip() == "10001"
    found = run(container, "sh", "-c", "for c in gcc cc c++ g++ clang make pip pip3; do command -v $c; done")
    assert found.stdout.strip() == "", found.stdout
    assert run(container, "python", "-c", "import pip").returncode != 0
    imports = run(container, "python", "-c", "import kserve, kfp, mlflow, sklearn, onnxruntime, predictors, pipelines")
    assert imports.returncode == 0, imports.stderr


@pytest.mark.parametrize("module", ["pipelines.streaming.trigger", "pipelines.monitoring", "pipelines.training.submit"])
def test_entry_points_start(container: str, module: str) -> None:
    done = run(container, "python", "-m", module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m " + module)


def test_the_model_server_answers_a_v2_call(container: str, model_dirs: dict[str, Path]) -> None:
    port = free_port()
    args = ["python", "-m", "predictors", f"--model_name={MODEL}", "--model_uri=/models/credit_risk",
            f"--http_port={port}", "--enable_grpc=false"]  # fmt: skip
    server = subprocess.Popen(
        command(container, *args, volumes={model_dirs[MODEL]: "/models/credit_risk:ro"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        from feature_specs.synthetic import generate

        frame = generate(MODEL, 5, seed=3).frame
        answer = httpx.post(
            f"{url}/v2/models/{MODEL}/infer", json=v2_request("smoke-1", raw_columns(frame)), timeout=30
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["id"] == "smoke-1" and body["model_name"] == MODEL
        probability = next(o for o in body["outputs"] if o["name"] == "probability")
        assert len(probability["data"]) == 5 and all(0 <= p <= 1 for p in probability["data"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def executor_input(ir: dict[str, Any], task: str, outputs: str) -> dict[str, Any]:
    """What the KFP launcher hands a task: its parameters (the pipeline's defaults, as the root passes
    them through) and where to write each output, from the task's component in the IR."""
    component = ir["components"][ir["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    defaults = {k: v.get("defaultValue") for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
    parameters = {k: defaults[k] for k in component["inputDefinitions"]["parameters"]}
    out = component["outputDefinitions"]
    artifacts = {
        name: {
            "artifacts": [
                {
                    "name": name,
                    "type": spec["artifactType"],
                    "metadata": {},
                    "uri": f"minio://mlpipeline/v2/artifacts/training/smoke/{task}/{name}",
                }
            ]
        }
        for name, spec in out.get("artifacts", {}).items()
    }
    params = {name: {"outputFile": f"{outputs}/{name}"} for name in out.get("parameters", {})}
    return {
        "inputs": {"parameterValues": parameters},
        "outputs": {"artifacts": artifacts, "parameters": params, "outputFile": f"{outputs}/executor_output.json"},
    }


def test_a_compiled_pipeline_step_runs_as_the_kfp_launcher_runs_it(container: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    land_synthetic(MODEL, 300, seed=5, root=Settings(data_dir=data).landing_dir)
    ir = yaml.safe_load(compile_all(tmp_path / "ir")[1].read_text())  # credit_risk.yaml
    assert ir["pipelineInfo"]["name"] == "credit-risk-training"
    spec = ir["deploymentSpec"]["executors"][ir["components"]["comp-extract"]["executorLabel"]]["container"]
    assert spec["image"].startswith("ghcr.io/constructos/ml-platform:")

    minio, outputs = tmp_path / "minio", tmp_path / "outputs"
    for folder in (minio, outputs):
        folder.mkdir()
        folder.chmod(0o777)  # written by UID 10001
    payload = json.dumps(executor_input(ir, "extract", "/outputs"))
    args = [payload if a == "{{$}}" else a for a in spec["args"]]
    volumes = {data: "/data:ro", minio: "/minio", outputs: "/outputs"}
    # the landing store read-only, the artifacts (the snapshot) in a store of their own, as on a cluster
    env = {"CONSTRUCTOS_DATA_DIR": "/data", "CONSTRUCTOS_ARTIFACTS_URI": "file:///minio/artifacts"}
    done = run(container, *spec["command"], *args, volumes=volumes, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads((outputs / "executor_output.json").read_text())
    assert result["parameterValues"]["rows"] == 300
    assert len(result["parameterValues"]["data_hash"]) >= 16
    snapshot = minio / "mlpipeline/v2/artifacts/training/smoke/extract/snapshot"
    assert len(pd.read_parquet(snapshot)) == 300
    assert set(load_spec(MODEL).feature_names) <= set(pd.read_parquet(snapshot).columns)
