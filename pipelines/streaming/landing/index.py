"""Which event ids are landed: the trigger's exactly-once guarantee, shared by all its replicas.

The landing store keeps rows; this index keeps, per model, every landed ``event_id`` with a 64-bit
digest of its landed values and the part that holds it, **on disk**, so memory stays flat however many ids
there are, and every replica sees what the others landed the moment they commit.

The contract (:class:`LandingIndex`) is small so that another backend (an object store with
conditional writes) can implement it:

``landed(model, ids)``
    Of ``ids``, those already landed, with their digests (a read; may be stale by the time it
    returns — :meth:`commit` is the arbiter).
``commit(model, part, entries)``
    Atomically record every ``event_id -> digest`` of ``entries`` as landed in ``part``, **all or
    nothing**: if any id is already landed (another replica won the race) nothing is recorded
    and those ids are returned; the caller drops them, rewrites its part and commits again.
``committed(model, part)``
    Whether ``part`` was committed (recovery: a part committed but not yet published).
``rows(model)``
    How many ids are landed (the retraining threshold counts these).

How the landing store uses it (:func:`pipelines.streaming.landing.exactly_once.land`): write the part under a
temporary name (invisible) → ``commit`` → publish it (rename). A crash before the commit leaves
garbage and no ids; after it, the next replica to start or take partitions publishes the part.
So a row is visible at most once, and a replayed batch finds its ids landed.

**Digest formats: both are read.** Each id's digest is stored with its scheme
(:mod:`pipelines.streaming.intake.digests`): 2, the specified blake2b digest that every commit writes,
or 1, the legacy pandas one that indexes written before it hold. Opening such an index adds the
``scheme`` column with default 1 (a schema change only: no row is rewritten, and a replica still
running the old code keeps writing rows marked legacy, which they are). ``landed`` returns a
legacy digest as :class:`~pipelines.streaming.intake.digests.Legacy`, and the caller compares it with the
newcomer's legacy digest, so a replay of an id landed before the upgrade is still a duplicate.
The reverse does not hold: a replica of the old version compares scheme 2 digests as its own and
would refuse a replay of an event landed by a new one as a conflict, so upgrade every replica at
once (the trigger's Deployment does: ``strategy: Recreate``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pipelines.streaming.intake.digests import BLAKE2B, LEGACY, Legacy
from pipelines.streaming.landing.sqlite_db import connect, write_transaction

CHUNK = 900  # ids per SQL statement (well below SQLite's host-parameter limit)


class LandingIndex(Protocol):
    def landed(self, model: str, ids: Sequence[str]) -> dict[str, int]: ...
    def commit(self, model: str, part: str, entries: Mapping[str, int]) -> list[str]: ...
    def committed(self, model: str, part: str) -> bool: ...
    def rows(self, model: str) -> int: ...


class SqliteIndex:
    """:class:`LandingIndex` as one SQLite file per model: ``<landing_dir>/.index/<model>.sqlite3``
    (one writer lock per model; ids keyed by themselves, sorted on insert for B-tree locality)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._dbs: dict[str, sqlite3.Connection] = {}

    def landed(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return self._select(self._db(model), "digest", ids)

    def commit(self, model: str, part: str, entries: Mapping[str, int], scheme: int = BLAKE2B) -> list[str]:
        """``scheme``: of the digests in ``entries`` (a log written before scheme 2 replays legacy ones)."""
        with self._lock:
            db = self._db(model)
            db.execute("BEGIN IMMEDIATE")
            try:
                part_id = db.execute("INSERT INTO parts (name, rows) VALUES (?, ?)", (part, len(entries))).lastrowid
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO ids (event_id, digest, part, scheme) VALUES (?, ?, ?, ?)",
                    ((event_id, entries[event_id], part_id, scheme) for event_id in sorted(entries)),
                )
                if db.total_changes - before < len(entries):  # some were landed first: all or nothing
                    owners = self._select(db, "part", list(entries))
                    db.execute("ROLLBACK")
                    return [event_id for event_id, owner in owners.items() if owner != part_id]
                db.execute("UPDATE counts SET rows = rows + ?", (len(entries),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return []

    def committed(self, model: str, part: str) -> bool:
        with self._lock:
            found = self._db(model).execute("SELECT 1 FROM parts WHERE name = ?", (part,)).fetchone()
        return found is not None

    def rows(self, model: str) -> int:
        with self._lock:
            return int(self._db(model).execute("SELECT rows FROM counts").fetchone()[0])

    def parts(self, model: str) -> int:
        """How many parts were committed (a log-backed index: the next log position)."""
        with self._lock:
            return int(self._db(model).execute("SELECT count(*) FROM parts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for db in self._dbs.values():
                db.close()
            self._dbs.clear()

    def _db(self, model: str) -> sqlite3.Connection:
        if model not in self._dbs:
            db = connect(self.root / ".index" / f"{model}.sqlite3")
            with write_transaction(db):
                db.execute("CREATE TABLE IF NOT EXISTS parts (id INTEGER PRIMARY KEY, name TEXT UNIQUE, rows INTEGER)")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS ids (event_id TEXT PRIMARY KEY, digest INTEGER NOT NULL,"
                    f" part INTEGER NOT NULL, scheme INTEGER NOT NULL DEFAULT {LEGACY}) WITHOUT ROWID"
                )
                if "scheme" not in {row[1] for row in db.execute("PRAGMA table_info(ids)")}:  # written before scheme 2
                    db.execute(f"ALTER TABLE ids ADD COLUMN scheme INTEGER NOT NULL DEFAULT {LEGACY}")
                db.execute("CREATE TABLE IF NOT EXISTS counts (rows INTEGER NOT NULL)")
                if db.execute("SELECT count(*) FROM counts").fetchone()[0] == 0:
                    db.execute("INSERT INTO counts VALUES (0)")
            self._dbs[model] = db
        return self._dbs[model]

    @staticmethod
    def _select(db: sqlite3.Connection, column: str, ids: Sequence[str]) -> dict[str, int]:
        """``column`` of each landed id of ``ids``; a digest of the legacy scheme as :class:`Legacy`."""
        found: dict[str, int] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            query = f"SELECT event_id, {column}, scheme FROM ids WHERE event_id IN ({','.join('?' * len(chunk))})"
            for event_id, value, scheme in db.execute(query, chunk):
                found[event_id] = Legacy(value) if column == "digest" and scheme == LEGACY else value
        return found
