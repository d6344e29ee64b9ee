"""The object-store landing index (a commit log created with conditional writes) on a local folder
and on the real S3 server: all-or-nothing commits, one owner per event id among racing replicas,
catch-up by other replicas, and a retried commit that had in fact succeeded."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.storage import Store
from pipelines.streaming.landing.log_index import LogIndex, log_key
from pipelines.streaming.landing.sqlite_db import connect
from tests.stores import Stores


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores, pytest.mark.integration])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store((tmp_path / "store").as_uri())
    stores: Stores = request.getfixturevalue("stores")
    return Store(stores.prefix_uri("log-index"), endpoint_url=stores.endpoint)


def test_commit_is_all_or_nothing_and_other_replicas_catch_up(store: Store, tmp_path: Path) -> None:
    one, two = LogIndex(store, tmp_path / "one"), LogIndex(store, tmp_path / "two")
    assert one.commit("m", "part-a.parquet", {"e1": 1, "e2": 2}) == []
    assert two.landed("m", ["e1"]) == {}  # its cache has not caught up yet: landed() may be stale
    assert two.rows("m") == 2 and two.committed("m", "part-a.parquet")
    assert two.landed("m", ["e1", "e3"]) == {"e1": 1}
    assert sorted(two.commit("m", "part-b.parquet", {"e2": 5, "e3": 3})) == ["e2"]  # e2 was landed first
    assert not one.committed("m", "part-b.parquet") and one.rows("m") == 2  # nothing of part-b recorded
    assert two.commit("m", "part-c.parquet", {"e3": 3}) == []
    assert one.rows("m") == 3 and one.landed("m", ["e3"]) == {"e3": 3}
    entry = {"part": "part-c.parquet", "ids": ["e3"], "digests": [3], "scheme": 2}
    assert json.loads(store.read_bytes(log_key("m", 1))) == entry
    assert not store.exists(log_key("m", 2)) and one.rows("other") == 0


def test_racing_replicas_land_every_id_once(store: Store, tmp_path: Path) -> None:
    replicas = [LogIndex(store, tmp_path / f"r{i}") for i in range(4)]
    batches = [{f"e{k}": k for k in range(start, start + 40)} for start in range(0, 400, 20)]  # each overlaps two

    def land(n: int) -> tuple[str, list[str]]:
        part = f"part-{n}.parquet"
        return part, replicas[n % 4].commit("m", part, batches[n])

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(land, range(len(batches))))
    owners: dict[str, str] = {}
    seq = 0
    while store.exists(log_key("m", seq)):
        entry = json.loads(store.read_bytes(log_key("m", seq)))
        for event_id in entry["ids"]:
            assert event_id not in owners, f"{event_id} in {owners.get(event_id)} and {entry['part']}"
            owners[event_id] = entry["part"]
        seq += 1
    won = {part for part, taken in outcomes if not taken}
    assert set(owners.values()) == won  # a part is in the log exactly when its commit returned no ids
    for part, taken in outcomes:  # a refused part lost only to ids someone else holds
        assert all(owners[i] != part for i in taken)
    assert all(r.rows("m") == len(owners) for r in replicas)


def test_a_commit_whose_put_succeeded_unseen_is_recognised_as_ours(store: Store, tmp_path: Path) -> None:
    index = LogIndex(store, tmp_path / "cache")
    entry = {"part": "part-x.parquet", "ids": ["e1"], "digests": [7]}
    store.put_if_absent(log_key("m", 0), json.dumps(entry).encode())  # the PUT landed, its answer was lost
    assert index.commit("m", "part-x.parquet", {"e1": 7}) == []  # the retry: not "e1 taken by another"
    assert index.rows("m") == 1


def test_replicas_sharing_one_cache_folder(store: Store, tmp_path: Path) -> None:
    one, two = LogIndex(store, tmp_path / "shared"), LogIndex(store, tmp_path / "shared")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: (one, two)[n % 2].commit("m", f"p{n}", {f"e{n}": n}), range(20)))
    assert one.rows("m") == two.rows("m") == 20
    one.close()
    assert LogIndex(store, tmp_path / "fresh").rows("m") == 20  # a fresh replica replays the log


def test_connections_racing_to_create_one_cache_file(tmp_path: Path) -> None:
    """Replicas starting together on a shared cache folder: the first switch of a new SQLite file to
    WAL answers "database is locked" at once to the others (not after the busy timeout)."""

    def open_it(path: Path, start: threading.Barrier) -> str:
        start.wait()
        db = connect(path)
        try:
            return str(db.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            db.close()

    for round_ in range(40):
        path, start = tmp_path / f"index-{round_}.sqlite3", threading.Barrier(6)
        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(lambda _: open_it(path, start), range(6))) == {"wal"}  # noqa: B023 (joined here)
