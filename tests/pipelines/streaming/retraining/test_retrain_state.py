"""The retraining ledger on a local folder and on the real S3 server, raced by replicas (threads,
each with its own store client): a key is claimed once, settled once, the model's baseline and
pending keys lose no update, a claim whose replica died half-way is finished by the next claimer,
and dead-letter attempts and poison records are kept on the store."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any, TypeVar

import pytest

from pipelines.storage import Store
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.state import RetrainState
from tests.stores import Stores

T = TypeVar("T")
REPLICAS = 8


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores, pytest.mark.integration])])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], RetrainState]:
    """Makes a replica's state: its own :class:`Store` client on the one shared ledger."""
    if request.param == "file":
        uri, endpoint = (tmp_path / "ledger").as_uri(), None
    else:
        stores: Stores = request.getfixturevalue("stores")
        uri, endpoint = stores.prefix_uri("ledger"), stores.endpoint
    return lambda: RetrainState(Store(uri, endpoint_url=endpoint))


def race(replica: Callable[[], RetrainState], act: Callable[[RetrainState, int], T]) -> list[T]:
    """``act(state, n)`` by REPLICAS replicas at once."""
    states = [replica() for _ in range(REPLICAS)]
    start = Barrier(REPLICAS)

    def one(n: int) -> T:
        start.wait()
        return act(states[n], n)

    with ThreadPoolExecutor(REPLICAS) as pool:
        return list(pool.map(one, range(REPLICAS)))


def test_a_key_is_claimed_once_and_settled_once(replica: Callable[[], RetrainState]) -> None:
    claims = race(replica, lambda s, n: s.claim("m-rows-0", "m", "pending", rows=100 + n, by=n))
    assert claims.count(True) == 1
    state = replica()
    winner = claims.index(True)
    entry = state.get("m-rows-0")
    assert entry is not None and entry["by"] == winner and entry["status"] == "pending"
    assert state.rows_at_last_run("m") == 100 + winner and [k for k, _ in state.pending("m")] == ["m-rows-0"]

    settles = race(replica, lambda s, n: s.settle("m-rows-0", "launched" if n % 2 else "failed", run_id=f"r{n}"))
    assert settles.count(True) == 1
    entry = state.get("m-rows-0")
    assert entry is not None and entry["run_id"] == f"r{settles.index(True)}" and entry["by"] == winner
    assert state.pending() == [] and state.rows_at_last_run("m") == 100 + winner


def test_concurrent_claims_of_one_model_lose_no_update(replica: Callable[[], RetrainState]) -> None:
    race(replica, lambda s, n: s.claim(f"m-request-{n}", "m", "pending", rows=10 * n))
    race(replica, lambda s, n: s.claim(f"other-request-{n}", "other", "skipped"))
    state = replica()
    assert state.rows_at_last_run("m") == 10 * (REPLICAS - 1) and state.rows_at_last_run("other") == 0
    assert sorted(k for k, _ in state.pending("m")) == sorted(f"m-request-{n}" for n in range(REPLICAS))
    assert state.pending("other") == [] and len(state.pending()) == REPLICAS
    race(replica, lambda s, n: s.settle(f"m-request-{n}", "launched"))
    assert state.pending() == [] and state.rows_at_last_run("m") == 10 * (REPLICAS - 1)


def test_a_claim_cut_short_is_finished_by_the_next_claimer(replica: Callable[[], RetrainState]) -> None:
    state = replica()
    entry = {"key": "m-rows-50", "model": "m", "status": "pending", "baseline": 50, "at": "t"}
    assert ledger.write_doc(state.store, "keys/m-rows-50.json", entry, None)  # the replica died right after this
    assert state.pending("m") == [] and state.rows_at_last_run("m") == 0
    assert not state.claim("m-rows-50", "m", "pending", rows=50)  # the same rows seen again: claimed before
    assert [k for k, _ in state.pending("m")] == ["m-rows-50"] and state.rows_at_last_run("m") == 50


def test_a_settle_cut_short_leaves_no_pending_key(replica: Callable[[], RetrainState]) -> None:
    state = replica()
    assert state.claim("m-rows-0", "m", "pending", rows=10)

    def launched(doc: dict[str, Any] | None) -> dict[str, Any]:
        return (doc or {}) | {"status": "launched"}

    ledger.update_doc(state.store, "keys/m-rows-0.json", launched)  # the replica died before the model's document
    assert state.pending() == []
    model, _ = ledger.read_doc(state.store, "models/m.json")
    assert model is not None and model["pending"] == []  # tidied up


def test_dead_letter_attempts_and_poison_records_are_shared(replica: Callable[[], RetrainState]) -> None:
    counts = race(replica, lambda s, n: s.failed_attempt("src.credit", 2, 41))
    assert sorted(counts) == list(range(1, REPLICAS + 1))
    assert replica().failed_attempt("src.credit", 2, 42) == 1
    replica().poisoned("src.credit", 2, 41, "RecordTooLarge")
    replica().poisoned("src/other", 0, 7, "MessageSizeTooLarge")
    kept = replica().poison()
    assert sorted((r["topic"], r["partition"], r["offset"], r["error"]) for r in kept) == [
        ("src.credit", 2, 41, "RecordTooLarge"),
        ("src/other", 0, 7, "MessageSizeTooLarge"),
    ]
