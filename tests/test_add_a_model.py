"""The README's "Add a model" walkthrough, end to end, on the YAML the README shows.

The spec goes into a folder of its own (``CONSTRUCTOS_SPEC_PATH``), the rows of scikit-learn's
diabetes data set are landed through the trigger's own validation (``Intake``, as events), the
kfp.local pipeline runs twice (champion, then challenger), ``python -m predictors`` serves it from
the default store under ``CONSTRUCTOS_DATA_DIR`` (no MLFLOW_TRACKING_URI), and the GitOps canary
starts on a copy of the manifests that ``make manifests`` rendered. No file of the project changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
MODEL = "diabetes_progression"


def readme_spec() -> str:
    section = (ROOT / "README.md").read_text().split("## Add a model", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir and a spec folder holding only the README's YAML; settings read afresh."""
    from pipelines.settings import get_settings

    root = tmp_path_factory.mktemp("add-a-model")
    (root / "specs").mkdir()
    (root / "specs" / f"{MODEL}.yaml").write_text(readme_spec())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONSTRUCTOS_SPEC_PATH", str(root / "specs"))
        mp.setenv("CONSTRUCTOS_DATA_DIR", str(root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("CONSTRUCTOS_MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        yield root
    get_settings.cache_clear()


def land_the_diabetes_data() -> int:
    """Step 2 of the README, landed as the trigger lands events (validated, in the landing schema)."""
    from sklearn.datasets import load_diabetes

    from feature_specs import load_spec
    from pipelines.settings import get_settings
    from pipelines.streaming.intake.validation import Intake
    from pipelines.streaming.landing.folder import write_folder_part

    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    now = datetime.now(UTC).isoformat()
    events = [
        {"event_id": f"diabetes-{i}", "occurred_at": now, **row} for i, row in enumerate(frame.to_dict("records"))
    ]
    intake = Intake(load_spec(MODEL), 64 * 1024)
    good, rejects = intake.split([json.dumps(e).encode() for e in events])
    assert rejects == []
    write_folder_part(get_settings().landing_dir, MODEL, intake.table([e for _, e in good], now))
    return len(good)


@pytest.mark.integration
@pytest.mark.timeout(2400)  # two pipeline runs and a server start; minutes on a busy machine
def test_the_readme_walkthrough_from_yaml_to_a_served_canary(world: Path, kustomize: str) -> None:
    from pipelines.manifests import render
    from pipelines.training import run

    # without data: a clear message, not a KeyError
    assert run.main([MODEL]) == 1

    assert land_the_diabetes_data() == 442
    first = run.run_local(MODEL)
    assert first.gate_passed, first.gate_reasons
    assert (first.version, first.alias) == ("1", "champion")
    assert first.metrics["mae"] < 60

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "predictors",
            f"--model_name={MODEL}",
            f"--http_port={port}",
            f"--grpc_port={free_port()}",
        ],
        cwd=world,  # not the checkout: the store comes from CONSTRUCTOS_DATA_DIR, not ./mlflow.db
        env=env,
        stdout=(world / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server, timeout=300)  # a loaded machine: imports, MLflow, the ONNX check
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError((world / "server.log").read_text()[-3000:]) from exc
        meta = httpx.get(f"{url}/v2/models/{MODEL}").json()
        assert meta["versions"] == ["1"] and meta["parameters"]["runtime"] == "onnxruntime"
        row = {"age": 59, "sex": 2, "bmi": 32.1, "bp": 101.0, "s1": 157.0, "s2": 93.2, "s3": 38.0}
        row |= {"s4": 4.0, "s5": 4.86, "s6": 87.0}
        inputs = [
            {"name": k, "shape": [1], "datatype": "INT64" if k in ("age", "sex") else "FP64", "data": [v]}
            for k, v in row.items()
        ]
        answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", json={"id": "walk-1", "inputs": inputs})
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["outputs"][0]["data"]
        assert answer.json()["outputs"][0]["name"] == "prediction" and 25 < prediction < 346
        too_old = [i | {"data": [130]} if i["name"] == "age" else i for i in inputs]
        refused = httpx.post(f"{url}/v2/models/{MODEL}/infer", json={"inputs": too_old})
        assert refused.status_code == 400 and refused.json()["error"].startswith("age: value 130 is above")
        assert httpx.get(f"{url}/api/v1/models/{MODEL}/contract").json()["required"][:2] == ["age", "sex"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = (world / "server.log").read_text()
    assert "probes agree with scikit-learn" in log
    assert f"MLflow store: sqlite:///{(world / 'data' / 'mlflow' / 'mlflow.db').resolve()}" in log

    second = run.run_local(MODEL)  # the same data again: no worse than the champion
    assert (second.version, second.alias) == ("2", "challenger"), second.gate_reasons

    manifests = world / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    assert render.main(["--manifests", str(manifests)]) == 0
    start = ["start", MODEL, "--offline", "--overlay", "staging", "--manifests", str(manifests)]
    rollout = subprocess.run(
        [sys.executable, "-m", "pipelines.rollout", *start],
        env=env | {"KUSTOMIZE": kustomize},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rollout.returncode == 0, rollout.stderr
    state = (manifests / "overlays" / "staging" / "rollout" / f"{MODEL}.yaml").read_text()
    assert "models:/diabetes_progression/2" in state and "canaryTrafficPercent" in state and "value: 10" in state
