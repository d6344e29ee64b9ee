"""Launch keys survive crashes: a launch killed mid-run is run again (loudly), one still running in
another process is not started twice, and a finished one returns its run id without a rerun.

The training run itself is modelled by a function that blocks (the real pipeline takes minutes);
what is under test is the ledger and its lock, across real processes and a real SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.settings import get_settings
from pipelines.streaming import launch
from pipelines.streaming.launch import LaunchInProgress, launch_training
from tests.kafka_broker import ROOT

BLOCKING_RUN = """
import sys, time
import pipelines.training.run as run
def forever(model, **params):
    print("training", flush=True)
    time.sleep(600)
run.run_local = forever
from pipelines.streaming.launch import launch_training
launch_training("credit_risk", key=sys.argv[1])
"""


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONSTRUCTOS_PIPELINE_RUNNER", "local")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_a_launch_killed_mid_run_is_run_again_and_a_running_one_is_not_doubled(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_RUN, "credit_risk-rows-0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "training"
        with pytest.raises(LaunchInProgress):  # the other process is training under this key
            launch_training("credit_risk", key="credit_risk-rows-0")
    finally:
        proc.kill()
        proc.wait(10)
    ledger = data_dir / "launches" / "credit_risk-rows-0.json"
    assert json.loads(ledger.read_text()) | {"started": 0} == {
        "model": "credit_risk",
        "key": "credit_risk-rows-0",
        "runner": "local",
        "attempt": 1,
        "status": "running",
        "run_id": "",
        "started": 0,
    }

    runs: list[str] = []

    def finishes(model: str, **params: Any) -> SimpleNamespace:
        runs.append(model)
        return SimpleNamespace(pipeline_run_id="training-abc")

    monkeypatch.setattr("pipelines.training.run.run_local", finishes)
    assert launch_training("credit_risk", key="credit_risk-rows-0") == "training-abc"  # interrupted: run again
    assert launch_training("credit_risk", key="credit_risk-rows-0") == "training-abc"  # done: not again
    assert runs == ["credit_risk"]
    record = json.loads(ledger.read_text())
    assert record["attempt"] == 2 and record["status"] == "finished" and record["run_id"] == "training-abc"


def test_a_failed_launch_fails_again_and_an_empty_run_id_is_a_failure(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipelines.training.run.run_local", lambda model, **p: SimpleNamespace(pipeline_run_id=""))
    with pytest.raises(RuntimeError, match="no run id"):
        launch_training("lead_score", key="lead_score-request-1")
    with pytest.raises(RuntimeError, match="failed before: the runner returned no run id"):
        launch_training("lead_score", key="lead_score-request-1")


def test_dry_run_records_the_launch_without_running(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSTRUCTOS_PIPELINE_RUNNER", "dry-run")
    get_settings.cache_clear()
    assert launch_training("stock_demand", key="k/../x") == "dry-run-k/../x"
    (ledger,) = (data_dir / "launches").glob("*.json")
    assert ledger.name == "k_.._x.json" and json.loads(ledger.read_text())["status"] == "launched"
    assert launch._ledger("k/../x") == ledger
