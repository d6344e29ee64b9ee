"""Landing digests: the specified scheme pinned by golden values, and a landing index written before
it (legacy pandas digests, SQLite or the object-store log) still telling a replay from a conflict."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.storage import Store
from pipelines.streaming.intake.digests import BLAKE2B, LEGACY, Legacy, legacy_digests, row_digests
from pipelines.streaming.intake.validation import Intake
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.landing.batch import CONFLICT, land_batch
from pipelines.streaming.landing.index import LandingIndex, SqliteIndex
from pipelines.streaming.landing.log_index import LogIndex, log_key
from pipelines.streaming.landing.sqlite_db import connect

SPEC = load_spec("credit_risk")
MODEL = SPEC.name
GOLDEN = pa.table(
    {
        "occurred_at": ["2026-01-01T00:00:00+00:00", "2026-01-02T12:30:00+00:00", "2026-01-03T00:00:00Z"],
        "segment": ["roofing", None, "électricité"],
        "projects": pa.array([3, 0, None], pa.int64()),
        "ratio": pa.array([0.25, -0.0, None], pa.float64()),
        "held": [True, None, False],
    }
)


def test_digests_are_blake2b_of_the_specified_encoding_pinned_by_golden_values() -> None:
    first_row = b"".join(
        [
            b"\x04" + (25).to_bytes(4, "big") + b"2026-01-01T00:00:00+00:00",  # string: tag, UTF-8 length, bytes
            b"\x04" + (7).to_bytes(4, "big") + b"roofing",
            b"\x02" + (3).to_bytes(8, "big", signed=True),  # int: tag, two's complement big-endian
            b"\x03" + struct.pack(">d", 0.25),  # float: tag, binary64 big-endian
            b"\x01\x01",  # bool: tag, true
        ]
    )
    spelled = int.from_bytes(hashlib.blake2b(first_row, digest_size=8).digest(), "little", signed=True)
    digests = row_digests(GOLDEN, GOLDEN.column_names)
    assert digests == [8638385226307682605, -1768304728034078781, 1654076383722783575]  # computed once
    assert digests[0] == spelled


def test_legacy_digests_are_what_indexes_written_before_hold() -> None:
    """Computed once with pandas 2.3: if a pandas upgrade changes ``hash_array``, this fails first
    (replays of events landed before the specified scheme would then read as conflicts)."""
    assert legacy_digests(GOLDEN, GOLDEN.column_names) == [
        3345858587761737919,
        -5866119530223272726,
        -8749782764069300792,
    ]


def test_equal_values_digest_alike_and_different_ones_apart() -> None:
    def digest(**columns: Any) -> int:
        return row_digests(pa.table(columns), list(columns))[0]

    assert digest(x=pa.array([-0.0])) == digest(x=pa.array([0.0]))
    assert digest(x=pa.array([float("nan")])) == digest(x=pa.array([-float("nan")]))
    assert digest(x=pa.array([None], pa.float64())) != digest(x=pa.array([0.0]))
    assert digest(x=pa.array([None], pa.float64())) != digest(x=pa.array([float("nan")]))
    assert digest(a=["ab"], b=["c"]) != digest(a=["a"], b=["bc"])  # lengths keep the boundary
    assert digest(a=pa.array([1], pa.int64())) != digest(a=pa.array([1.0]))  # the schema types the value
    assert row_digests(GOLDEN.slice(0, 0), GOLDEN.column_names) == []


# --- an index written the old way ---------------------------------------------------------------

OLD_SQLITE = (  # the index's tables before digests had a scheme
    "CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT UNIQUE, rows INTEGER)",
    "CREATE TABLE ids (event_id TEXT PRIMARY KEY, digest INTEGER NOT NULL, part INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE counts (rows INTEGER NOT NULL)",
)


def land_the_old_way(kind: str, store: Store, root: Path, events: list[dict[str, Any]]) -> None:
    """What the trigger left before the specified digests: a published part, and its ids with legacy
    digests in the SQLite index beside the folder or in the store's landing log."""
    intake = Intake(SPEC, 4096)
    table = intake.table(events, datetime.now(UTC).isoformat())
    ids, digests = table.column("event_id").to_pylist(), intake.legacy_digests(table)
    key = landing_parts.write_part(store, MODEL, table)
    assert key is not None
    part = key.rsplit("/", 1)[-1]
    if kind == "log":
        entry = {"part": part, "ids": ids, "digests": digests}
        store.put(log_key(MODEL, 0), json.dumps(entry).encode())
        return
    db = connect(root / ".index" / f"{MODEL}.sqlite3")
    for statement in OLD_SQLITE:
        db.execute(statement)
    db.execute("INSERT INTO parts (id, name, rows) VALUES (1, ?, ?)", (part, len(ids)))
    db.executemany("INSERT INTO ids VALUES (?, ?, 1)", zip(ids, digests, strict=True))
    db.execute("INSERT INTO counts VALUES (?)", (len(ids),))
    db.close()


@pytest.mark.parametrize("kind", ["sqlite", "log"])
def test_an_index_written_the_old_way_still_tells_a_replay_from_a_conflict(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    store = Store(root.as_uri())
    events = to_events(generate(MODEL, 8, seed=5), seed=5)
    land_the_old_way(kind, store, root, events[:5])
    index: LandingIndex = SqliteIndex(root) if kind == "sqlite" else LogIndex(store, tmp_path / "cache")
    intake = Intake(SPEC, 4096)

    def land(*batch: dict[str, Any]) -> Any:
        return land_batch(intake, store, index, MODEL, [json.dumps(e).encode() for e in batch])

    resent = events[1] | {"active_projects": float(events[1]["active_projects"])}  # 3 == 3.0: the same
    changed = events[2] | {"avg_days_to_pay": events[2]["avg_days_to_pay"] + 7}
    outcome = land(events[0], resent, changed, events[5])  # the log's cache catches up in the commit
    assert (outcome.landed, outcome.duplicates, outcome.conflicts) == (1, 2, 1)
    assert [(r.index, r.field, r.reason) for r in outcome.rejects] == [(2, "event_id", CONFLICT)]
    assert isinstance(index.landed(MODEL, [events[0]["event_id"]])[events[0]["event_id"]], Legacy)
    # the event landed now holds a digest of the specified scheme: its replays are told apart too
    assert not isinstance(index.landed(MODEL, [events[5]["event_id"]])[events[5]["event_id"]], Legacy)
    again = land(events[5], events[5] | {"defaulted_90d": not events[5]["defaulted_90d"]}, events[3])
    assert (again.landed, again.duplicates, again.conflicts) == (0, 2, 1)
    assert index.rows(MODEL) == 6
    assert len(landing_parts.read_landed(store, MODEL)) == 6
    if kind == "sqlite":  # opened in place: the old rows are marked legacy, none rewritten
        db = connect(root / ".index" / f"{MODEL}.sqlite3")
        schemes = dict(db.execute("SELECT scheme, count(*) FROM ids GROUP BY scheme").fetchall())
        assert schemes == {LEGACY: 5, BLAKE2B: 1}
    else:  # the new log entry names its scheme
        assert json.loads(store.read_bytes(log_key(MODEL, 1)))["scheme"] == BLAKE2B
