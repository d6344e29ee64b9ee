"""Which event ids are landed: the trigger's exactly-once guarantee, shared by all its replicas.

The landing store keeps rows; this index keeps, per model, every landed ``event_id`` with a digest
of its content and the part that holds it, **on disk**, so memory stays flat however many ids
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

How the landing store uses it (:func:`pipelines.streaming.landing.land`): write the part under a
temporary name (invisible) → ``commit`` → publish it (rename). A crash before the commit leaves
garbage and no ids; after it, the next replica to start or take partitions publishes the part.
So a row is visible at most once, and a replayed batch finds its ids landed.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipelines.streaming.state_db import connect, write

CHUNK = 900  # ids per SQL statement (well below SQLite's host-parameter limit)


class LandingIndex(Protocol):
    def landed(self, model: str, ids: Sequence[str]) -> dict[str, bytes]: ...
    def commit(self, model: str, part: str, entries: Mapping[str, bytes]) -> list[str]: ...
    def committed(self, model: str, part: str) -> bool: ...
    def rows(self, model: str) -> int: ...


def digest(values: Iterable[Any]) -> bytes:
    """8 bytes that tell two versions of an event apart (its landed values, in schema order)."""
    return hashlib.blake2b(repr(tuple(values)).encode("utf-8", "backslashreplace"), digest_size=8).digest()


class SqliteIndex:
    """:class:`LandingIndex` in one SQLite file beside the parts (``<landing_dir>/index.sqlite3``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = connect(path)
        with self._lock, write(self._db) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS parts (id INTEGER PRIMARY KEY, model TEXT NOT NULL, name TEXT NOT NULL,"
                " rows INTEGER NOT NULL, UNIQUE (model, name))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS ids (model TEXT NOT NULL, event_id TEXT NOT NULL, digest BLOB NOT NULL,"
                " part INTEGER NOT NULL, PRIMARY KEY (model, event_id)) WITHOUT ROWID"
            )
            db.execute("CREATE TABLE IF NOT EXISTS counts (model TEXT PRIMARY KEY, rows INTEGER NOT NULL)")

    def landed(self, model: str, ids: Sequence[str]) -> dict[str, bytes]:
        with self._lock:
            return self._landed(self._db, model, ids)

    def commit(self, model: str, part: str, entries: Mapping[str, bytes]) -> list[str]:
        with self._lock, write(self._db) as db:
            taken = list(self._landed(db, model, list(entries)))
            if taken:
                return taken
            part_id = db.execute(
                "INSERT INTO parts (model, name, rows) VALUES (?, ?, ?)", (model, part, len(entries))
            ).lastrowid
            db.executemany(
                "INSERT INTO ids (model, event_id, digest, part) VALUES (?, ?, ?, ?)",
                ((model, event_id, d, part_id) for event_id, d in entries.items()),
            )
            db.execute(
                "INSERT INTO counts VALUES (?, ?) ON CONFLICT (model) DO UPDATE SET rows = rows + excluded.rows",
                (model, len(entries)),
            )
            return []

    def committed(self, model: str, part: str) -> bool:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM parts WHERE model = ? AND name = ?", (model, part)).fetchone()
        return found is not None

    def rows(self, model: str) -> int:
        with self._lock:
            found = self._db.execute("SELECT rows FROM counts WHERE model = ?", (model,)).fetchone()
        return int(found[0]) if found else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _landed(db: sqlite3.Connection, model: str, ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT event_id, digest FROM ids WHERE model = ? AND event_id IN ({marks})"
            found.update(db.execute(query, (model, *chunk)).fetchall())
        return found
