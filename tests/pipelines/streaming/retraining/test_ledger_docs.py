"""The typed ledger documents describe what is on disk: documents written before they were typed
are read and settled as before, and what the trigger writes has exactly the typed fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.settings import get_settings
from pipelines.storage import Store
from pipelines.streaming.retraining import ledger_docs
from pipelines.streaming.retraining.launch import launch_training, ledger_key
from pipelines.streaming.retraining.state import RetrainState

KEY = "credit_risk-rows-0"
OLD_KEY = {  # keys/<key>.json as the trigger wrote it before the types (sorted keys)
    "at": "2026-01-05T10:00:00+00:00",
    "baseline": 1200,
    "key": KEY,
    "landed_rows": 1200,
    "model": "credit_risk",
    "new_rows": 1200,
    "reason": "new_rows",
    "status": "pending",
}
OLD_LAUNCH = {  # launches/<key>.json of a local run that ended
    "attempt": 1,
    "holder": "trigger-0:7:0a1b2c3d",
    "key": KEY,
    "lease_until": 0.0,
    "model": "credit_risk",
    "run_id": "training-abc",
    "runner": "local",
    "started": 1767607200.0,
    "status": "finished",
}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONSTRUCTOS_PIPELINE_RUNNER", "dry-run")
    get_settings.cache_clear()
    yield get_settings().ledger_store
    get_settings.cache_clear()


def test_documents_written_before_the_types_are_read_and_settled_as_before(store: Store) -> None:
    store.put(f"keys/{KEY}.json", json.dumps(OLD_KEY).encode())
    store.put("models/credit_risk.json", json.dumps({"model": "credit_risk", "pending": [KEY], "rows": 1200}).encode())
    state = RetrainState(store)
    assert state.pending("credit_risk") == [(KEY, OLD_KEY)] and state.rows_at_last_run("credit_risk") == 1200
    assert state.settle(KEY, "launched", run_id="training-abc")
    settled = json.loads(store.read_bytes(f"keys/{KEY}.json"))
    assert settled.keys() == OLD_KEY.keys() | {"run_id"} and settled["status"] == "launched"
    assert json.loads(store.read_bytes("models/credit_risk.json")) == {
        "model": "credit_risk",
        "pending": [],
        "rows": 1200,
    }
    assert settled.keys() <= ledger_docs.KeyDoc.__required_keys__ | ledger_docs.KeyDoc.__optional_keys__


def test_a_finished_local_launch_returns_its_run_id_under_any_runner(store: Store) -> None:
    store.put(ledger_key(KEY), json.dumps(OLD_LAUNCH).encode())
    assert launch_training("credit_risk", key=KEY) == "training-abc"  # not launched again
    assert json.loads(store.read_bytes(ledger_key(KEY))) == OLD_LAUNCH


def test_a_launch_writes_exactly_the_typed_fields(store: Store) -> None:
    assert launch_training("credit_risk", key="credit_risk-request-r1") == "dry-run-credit_risk-request-r1"
    written = json.loads(store.read_bytes(ledger_key("credit_risk-request-r1")))
    assert written.keys() == ledger_docs.LaunchDoc.__required_keys__
    assert written["status"] == "launched" and written["runner"] == "dry-run" and written["lease_until"] == 0.0
