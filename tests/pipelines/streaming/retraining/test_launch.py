"""Launch keys survive crashes, on a local ledger folder and on the real S3 server: a launch whose
holder is SIGKILLed is taken over once its lease expires (attempt 2), a live lease (renewed by the
holder's heartbeat) keeps every other launcher out, of several launchers racing for a key exactly
one runs it, and a finished launch returns its run id without a rerun.

The training run itself is modelled by a function that blocks (the real pipeline takes minutes);
what is under test is the ledger and its lease, across real processes and a real SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.settings import get_settings
from pipelines.storage import Store
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.launch import LaunchInProgress, launch_training, ledger_key
from tests.kafka_broker import ROOT
from tests.stores import Stores

LEASE_S = 2.0
BLOCKING_RUN = """
import sys, time
import pipelines.training.run as run
def forever(model, **params):
    print("training", flush=True)
    time.sleep(600)
run.run_local = forever
from pipelines.streaming.retraining.launch import launch_training
launch_training("credit_risk", key=sys.argv[1])
"""


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores, pytest.mark.integration])])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The ledger store of ``get_settings()`` (and of child processes): a folder or an S3 prefix."""
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONSTRUCTOS_PIPELINE_RUNNER", "local")
    monkeypatch.setenv("CONSTRUCTOS_LAUNCH_LEASE_S", str(LEASE_S))
    if request.param == "s3":
        stores: Stores = request.getfixturevalue("stores")
        monkeypatch.setenv("CONSTRUCTOS_LEDGER_URI", stores.prefix_uri("ledger"))
        monkeypatch.setenv("CONSTRUCTOS_S3_ENDPOINT_URL", stores.endpoint)
    get_settings.cache_clear()
    yield get_settings().ledger_store
    get_settings.cache_clear()


def record(store: Store, key: str) -> dict[str, Any]:
    return dict(json.loads(store.read_bytes(ledger_key(key))))


def finishing(runs: list[str], run_id: str = "training-abc", pause: float = 0.0) -> Any:
    def run_local(model: str, **params: Any) -> SimpleNamespace:
        runs.append(model)
        time.sleep(pause)
        return SimpleNamespace(pipeline_run_id=run_id)

    return run_local


def test_a_killed_holder_is_taken_over_after_its_lease_and_a_live_one_is_not_doubled(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "credit_risk-rows-0"

    def must_not_run(model: str, **params: Any) -> None:
        raise AssertionError("a live lease was taken over")

    monkeypatch.setattr("pipelines.training.run.run_local", must_not_run)
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_RUN, key], env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"training"
        for _ in range(3):  # three lease lengths: the holder's heartbeat keeps its lease alive
            with pytest.raises(LaunchInProgress):
                launch_training("credit_risk", key=key)
            time.sleep(LEASE_S)
        holder = record(store, key)["holder"]
        assert holder.split(":")[1] == str(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
    with pytest.raises(LaunchInProgress) as live:  # killed, but its last lease has not run out yet
        launch_training("credit_risk", key=key)
    assert 0 < live.value.retry_in <= LEASE_S
    left = record(store, key)
    assert left | {"started": 0, "lease_until": 0} == {
        "model": "credit_risk",
        "key": key,
        "runner": "local",
        "attempt": 1,
        "status": "running",
        "run_id": "",
        "holder": holder,
        "started": 0,
        "lease_until": 0,
    }

    time.sleep(live.value.retry_in + 0.1)
    runs: list[str] = []
    monkeypatch.setattr("pipelines.training.run.run_local", finishing(runs))
    assert launch_training("credit_risk", key=key) == "training-abc"  # the lease expired: taken over
    assert launch_training("credit_risk", key=key) == "training-abc"  # done: not again
    assert runs == ["credit_risk"]
    done = record(store, key)
    assert done["attempt"] == 2 and done["status"] == "finished" and done["run_id"] == "training-abc"
    assert done["holder"] != holder


@pytest.mark.parametrize("earlier", ["none", "expired"])
def test_of_racing_launchers_exactly_one_runs_the_key(
    store: Store, monkeypatch: pytest.MonkeyPatch, earlier: str
) -> None:
    key = "lead_score-request-7"
    if earlier == "expired":  # a holder that died long ago
        dead = {"key": key, "model": "lead_score", "status": "running", "attempt": 1, "lease_until": 1.0}
        assert ledger.write_doc(store, ledger_key(key), dead | {"holder": "gone:1:x", "run_id": ""}, None)
    runs: list[str] = []
    monkeypatch.setattr("pipelines.training.run.run_local", finishing(runs, pause=1.0))
    start = threading.Barrier(8)

    def launch(_: int) -> str:
        start.wait()
        try:
            return launch_training("lead_score", key=key)
        except LaunchInProgress:
            return "in progress"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(launch, range(8)))
    assert runs == ["lead_score"]
    assert outcomes == ["in progress"] * 7 + ["training-abc"]
    assert record(store, key)["attempt"] == (2 if earlier == "expired" else 1)


@pytest.mark.parametrize("writer", ["another launcher", "the holder itself"])
def test_a_holder_whose_lease_was_taken_says_so_and_records_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, writer: str
) -> None:
    """Someone else wrote the holder's record: another launcher (a takeover), or the holder itself
    (a write that succeeded but whose answer was lost: its lease goes on)."""
    key = "stock_demand-rows-5"
    started, release = threading.Event(), threading.Event()

    def stalls(model: str, **params: Any) -> SimpleNamespace:
        started.set()
        release.wait(30)
        return SimpleNamespace(pipeline_run_id="training-late")

    monkeypatch.setattr("pipelines.training.run.run_local", stalls)
    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(launch_training, "stock_demand", key=key)
        assert started.wait(30)
        current, tag = ledger.read_doc(store, ledger_key(key))
        assert current is not None and current["status"] == "running"
        other = current | {"lease_until": time.time() + 60}
        if writer == "another launcher":
            other |= {"holder": "other:2:y", "attempt": 2}
        assert ledger.write_doc(store, ledger_key(key), other, tag)
        with caplog.at_level(logging.ERROR, "pipelines.streaming.retraining.launch"):
            time.sleep(LEASE_S)  # the next renewal finds the new version
            release.set()
            assert outcome.result(30) == "training-late"
    if writer == "another launcher":
        assert "lease lost, another launcher took the key over" in caplog.text
        assert "lease lost; its outcome" in caplog.text
        assert record(store, key) == other  # the new holder's record is left alone
    else:
        assert "lease lost" not in caplog.text
        assert record(store, key)["status"] == "finished" and record(store, key)["run_id"] == "training-late"


def test_a_failed_launch_fails_again_and_an_empty_run_id_is_a_failure(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipelines.training.run.run_local", lambda model, **p: SimpleNamespace(pipeline_run_id=""))
    with pytest.raises(RuntimeError, match="no run id"):
        launch_training("lead_score", key="lead_score-request-1")
    with pytest.raises(RuntimeError, match="failed before: the runner returned no run id"):
        launch_training("lead_score", key="lead_score-request-1")
    assert record(store, "lead_score-request-1")["lease_until"] == 0.0


def test_dry_run_records_the_launch_without_running(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSTRUCTOS_PIPELINE_RUNNER", "dry-run")
    get_settings.cache_clear()
    assert launch_training("stock_demand", key="k/../x") == "dry-run-k/../x"
    assert launch_training("stock_demand", key="k_.._x") == "dry-run-k_.._x"  # another key, another name
    assert store.list_keys("launches") == sorted([ledger_key("k/../x"), "launches/k_.._x.json"])
    assert record(store, "k/../x")["status"] == "launched" and record(store, "k/../x")["key"] == "k/../x"
