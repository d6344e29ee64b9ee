"""Store outages against real servers (a private PostgreSQL + S3 + MLflow, stopped on purpose):
serving keeps answering with the models it loaded, a pipeline step fails naming the store, the
trigger pauses landing into S3 without committing offsets, and everything works again once the
store is back, nothing lost or duplicated."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
import pandas as pd
import pytest

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.storage import Store, StoreUnavailable
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.landing.log_index import LogIndex
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import ensure_topics, named
from pipelines.training.steps.extract import extract
from tests.helpers import free_port, wait_ready
from tests.kafka_broker import TriggerProcess
from tests.pipelines.streaming.trigger.test_trigger_replicas import committed_offsets, landed_ids
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
    env = os.environ | world.client_env() | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
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
        landing_parts.write_part(landing, "lead_score", _rows())
        with Outage(private_stores, "s3", server):
            with pytest.raises(StoreUnavailable, match=rf"store s3://{world.bucket}/landing \(lead_score\)"):
                extract(landing, "lead_score", tmp_path / "snapshot.parquet")
            message = mlflow_check(world)
            assert "cannot reach its artifact store" in message, message
        assert extract(landing, "lead_score", tmp_path / "snapshot.parquet").rows == 3  # nothing was lost
    assert mlflow_check(world).strip() == world.tracking_uri


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"event_id": ["e1", "e2", "e3"], "occurred_at": "2026-01-01T00:00:00+00:00", "x": 1.0})


def test_s3_down_the_trigger_pauses_landing_and_resumes(
    private_stores: PrivateStores, kafka_settings: Settings, tmp_path: Path
) -> None:
    own, model = private_stores.stores(), "lead_score"
    settings = kafka_settings.model_copy(
        update={"landing_uri": f"s3://{own.bucket}/trigger-{tmp_path.name}", "s3_endpoint_url": own.endpoint}
    )
    ensure_topics(settings, [model])
    topic = named(load_spec(model).source_topic, settings)
    events = to_events(generate(model, 6000, seed=5), seed=5)
    with mock.patch.dict(os.environ, own.client_env()):
        trigger = TriggerProcess(settings, model, poll_records=500)
        index = LogIndex(settings.landing_store, tmp_path / "check")
    stopped: float | None = None
    try:
        publish_events(model, events[:3000], settings)
        # the first batch: a group join and the first S3 writes, slow on a busy machine
        trigger.wait_for(r"DEBUG.*: landed 500", timeout=300)
        private_stores.run("stop", "s3")
        stopped = time.monotonic()
        publish_events(model, events[3000:], settings)
        trigger.wait_for("landing paused, offsets not committed", timeout=60)
        time.sleep(5)  # the batches in flight when the store went are settled by now
        before = committed_offsets(settings, topic)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - (stopped or 0.0))))
        assert trigger.proc.poll() is None, f"the trigger exited during the outage:\n{trigger.log()}"
        assert committed_offsets(settings, topic) == before, "offsets were committed while the store was down"
        assert before < len(events)
        private_stores.run("start", "s3")
        stopped = None
        trigger.wait_for("landing resumed", timeout=120)
        with mock.patch.dict(os.environ, own.client_env()):
            deadline = time.monotonic() + 120
            while index.rows(model) < len(events):
                assert time.monotonic() < deadline, f"{index.rows(model)} landed\n{trigger.log()}"
                time.sleep(0.5)
            ids = landed_ids(settings, model)
    finally:
        trigger.proc.terminate()
        trigger.proc.wait(30)
        if stopped is not None:  # failed during the outage: bring the store back for the next tests
            private_stores.run("start", "s3")
    assert sorted(ids) == sorted(e["event_id"] for e in events)  # none lost, none twice
    assert sum("landing paused" in line for line in trigger.lines) == 1, "one warning per outage"
    log = "".join(trigger.lines)
    assert "Traceback" not in log and own.env["AWS_SECRET_ACCESS_KEY"] not in log
