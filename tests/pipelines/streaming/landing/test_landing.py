"""The trigger's landing (stage → commit → publish) on a local folder and on the real S3 server:
what readers see after a crash at each step, and what recovery does with it."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipelines.storage import Store
from pipelines.streaming.landing import exactly_once
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.landing.index import LandingIndex, SqliteIndex
from pipelines.streaming.landing.log_index import LogIndex
from tests.stores import Stores

MODEL = "m"


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores, pytest.mark.integration])])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, LandingIndex]:
    """A landing store with the index the trigger uses on it."""
    if request.param == "file":
        store = Store((tmp_path / "landing").as_uri())
        return store, SqliteIndex(tmp_path / "landing")
    stores: Stores = request.getfixturevalue("stores")
    store = Store(stores.prefix_uri("landing"), endpoint_url=stores.endpoint)
    return store, LogIndex(store, tmp_path / "cache")


def rows(*ids: str) -> pa.Table:
    return pa.table(
        {"event_id": list(ids), "occurred_at": ["2026-01-01T00:00:00+00:00"] * len(ids), "x": [1.0] * len(ids)}
    )


def stage(store: Store, table: pa.Table, name: str | None = None) -> str:
    """What a trigger killed right after staging leaves behind; returns the part's name."""
    name = name or landing_parts.part_key(MODEL).rsplit("/", 1)[-1]
    store.put(exactly_once.staged_key(MODEL, name), exactly_once._parquet(table))
    return name


def test_land_then_a_replay_lands_nothing_and_readers_see_each_row_once(world: tuple[Store, LandingIndex]) -> None:
    store, index = world
    assert exactly_once.land(store, index, MODEL, rows("a", "b"), {"a": 1, "b": 2}) == []
    assert exactly_once.land(store, index, MODEL, rows("b", "c"), {"b": 2, "c": 3}) == ["b"]  # b was landed before
    assert landing_parts.read_landed(store, MODEL)["event_id"].tolist() == ["a", "b", "c"]
    assert store.list_keys(f"{MODEL}/{exactly_once.STAGING}") == []  # nothing left staged
    assert index.rows(MODEL) == 3 and landing_parts.row_count(store, MODEL) == 3


def test_a_staged_uncommitted_part_is_invisible_and_removed_once_stale(world: tuple[Store, LandingIndex]) -> None:
    store, index = world
    landing_parts.write_part(store, MODEL, rows("a").to_pandas())  # a backfill: outside the index
    fresh = stage(store, rows("b"))
    old = stage(store, rows("c"), f"part-{time.time_ns() - 3600 * 10**9}-0badf00d.parquet")
    assert landing_parts.part_keys(store, MODEL) == [k for k in store.list_keys(MODEL) if "/_staging/" not in k]
    assert landing_parts.read_landed(store, MODEL)["event_id"].tolist() == ["a"]
    assert landing_parts.row_count(store, MODEL) == 1  # backfills counted, staged parts not
    assert exactly_once.recover(store, index, MODEL) == 0
    staged = store.list_keys(f"{MODEL}/{exactly_once.STAGING}")
    assert staged == [exactly_once.staged_key(MODEL, fresh)]  # old one deleted
    assert not store.exists(exactly_once.staged_key(MODEL, old))


def test_recovery_publishes_a_committed_staged_part(world: tuple[Store, LandingIndex]) -> None:
    store, index = world
    name = stage(store, rows("a", "b"))
    assert index.commit(MODEL, name, {"a": 1, "b": 2}) == []  # killed between commit and publish
    assert landing_parts.read_landed(store, MODEL).empty  # committed but not yet visible
    assert exactly_once.recover(store, index, MODEL) == 1
    assert landing_parts.read_landed(store, MODEL)["event_id"].tolist() == ["a", "b"]
    assert exactly_once.recover(store, index, MODEL) == 0 and store.list_keys(f"{MODEL}/{exactly_once.STAGING}") == []
    assert exactly_once.land(store, index, MODEL, rows("a", "b"), {"a": 1, "b": 2}) == ["a", "b"]  # the replay
    assert landing_parts.row_count(store, MODEL) == 2


def test_publishing_twice_keeps_one_copy(world: tuple[Store, LandingIndex]) -> None:
    """A replica recovering a part while its writer publishes it: the conditional create keeps one."""
    store, _ = world
    name = stage(store, rows("a"))
    data = store.read_bytes(exactly_once.staged_key(MODEL, name))
    exactly_once.publish(store, MODEL, name, data)
    exactly_once.publish(store, MODEL, name, data)
    assert landing_parts.part_keys(store, MODEL) == [f"{MODEL}/{name}"]
    pd.testing.assert_frame_equal(landing_parts.read_landed(store, MODEL), rows("a").to_pandas())
