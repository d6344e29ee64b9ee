"""Store outages against real servers (a private PostgreSQL + S3 + MLflow, stopped on purpose):
serving keeps answering with the models it loaded, a pipeline step fails naming the store, and
everything works again once the store is back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from pipelines import landing_store
from pipelines.storage import Store, StoreUnavailable
from pipelines.training.steps.extract import extract
from tests.helpers import free_port, wait_ready
from tests.stores import PrivateStores, Stores
from tests.test_mlflow_server import REGISTER

pytestmark = [pytest.mark.integration, pytest.mark.stores]
OUTAGE_S = float(os.environ.get("CONSTRUCTOS_TEST_OUTAGE_S", "30"))
QUERY = {"industry": "Construction", "value": 5e6}


@pytest.fixture(scope="module")
def world(private_stores: PrivateStores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """The private stores with a lead_score champion registered in their MLflow."""
    own = private_stores.stores()
    env = os.environ | own.client_env()
    cwd = tmp_path_factory.mktemp("register")
    done = subprocess.run([sys.executable, "-c", REGISTER], env=env, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"registering the champion failed:\n{done.stderr[-3000:]}"
    yield own


@pytest.fixture(scope="module")
def server(world: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ModelServer that loaded ``lead_score@champion`` from the private MLflow."""
    port = free_port()
    env = os.environ | world.client_env()
    cmd = [sys.executable, "-m", "predictors", "--model_name=lead_score", f"--http_port={port}", "--enable_grpc=false"]
    cwd = tmp_path_factory.mktemp("serve")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=180)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Outage:
    """Stop a store for at least ``OUTAGE_S`` seconds while a thread asks the served model every
    0.2 s; every answer during the outage must be a prediction."""

    def __init__(self, stores: PrivateStores, name: str, server: str) -> None:
        self.stores, self.name, self.server = stores, name, server
        self.answered, self.failures = 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._asker = threading.Thread(target=self._ask, daemon=True)

    def _ask(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    reply = client.get(f"{self.server}/api/v1/predict/lead_score", params=QUERY)
                    if reply.status_code == 200 and 0 <= reply.json()["probability"] <= 1:
                        self.answered += 1
                    else:
                        self.failures.append(f"{reply.status_code} {reply.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.2)

    def __enter__(self) -> Outage:
        self.stores.run("stop", self.name)
        self.started = time.monotonic()
        self._asker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - self.started)))
        self._stop.set()
        self._asker.join(10)
        self.stores.run("start", self.name)
        assert not self.failures, f"serving failed while {self.name} was down: {self.failures[:3]}"
        assert self.answered >= OUTAGE_S, f"only {self.answered} answers in {OUTAGE_S} s"


def mlflow_check(world: Stores) -> str:
    """What a pipeline step sees first: ``mlflow_store.configure()`` in a fresh process."""
    code = "from pipelines.training import mlflow_store; print(mlflow_store.configure())"
    env = os.environ | world.client_env() | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


def test_postgres_down(private_stores: PrivateStores, world: Stores, server: str) -> None:
    with Outage(private_stores, "postgres", server):
        message = mlflow_check(world)
        assert "StoreUnavailable" in message and "cannot reach its backend store" in message, message
        assert "Connection refused" in message or "connection failed" in message, message
    assert mlflow_check(world).strip() == world.tracking_uri  # back: steps run again


def test_s3_down(private_stores: PrivateStores, world: Stores, server: str, tmp_path: Path) -> None:
    landing = Store(f"s3://{world.bucket}/landing", endpoint_url=world.endpoint)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in world.client_env().items():
            mp.setenv(k, v)
        landing_store.write_part(landing, "lead_score", _rows())
        with Outage(private_stores, "s3", server):
            with pytest.raises(StoreUnavailable, match=rf"store s3://{world.bucket}/landing \(lead_score\)"):
                extract(landing, "lead_score", tmp_path / "snapshot.parquet")
            message = mlflow_check(world)
            assert "cannot reach its artifact store" in message, message
        assert extract(landing, "lead_score", tmp_path / "snapshot.parquet").rows == 3  # nothing was lost
    assert mlflow_check(world).strip() == world.tracking_uri


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"event_id": ["e1", "e2", "e3"], "occurred_at": "2026-01-01T00:00:00+00:00", "x": 1.0})
