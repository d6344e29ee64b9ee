"""The trigger's memory, shared by its replicas: one SQLite file (``Settings.trigger_state_path``).

**Retraining.** Per model: how many rows were landed when its last run was launched (the baseline
of "new rows"). Per trigger key: what became of it (``pending`` → ``launched`` | ``failed``, or
``skipped``). A key is *claimed* before its launch, atomically across replicas, so it launches
once; a ``pending`` key (its launcher died) is launched again with the same key, which the
launcher uses to tell a run in progress from an interrupted one.

**Poison records.** Records that could not even be dead-lettered: their topic, partition, offset
and the error, kept here (never lost silently), with the count of failed attempts before that.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.streaming.state_db import connect, write

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS baselines (model TEXT PRIMARY KEY, rows INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL,"
    " entry TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts (topic TEXT, partition INTEGER, offset INTEGER, failures INTEGER NOT NULL,"
    " PRIMARY KEY (topic, partition, offset))",
    "CREATE TABLE IF NOT EXISTS poison (topic TEXT, partition INTEGER, offset INTEGER, error TEXT NOT NULL,"
    " at TEXT NOT NULL, PRIMARY KEY (topic, partition, offset))",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RetrainState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = connect(path)
        with self._lock, write(self._db) as db:
            for statement in _SCHEMA:
                db.execute(statement)

    # -- retraining ---------------------------------------------------------------------

    def rows_at_last_run(self, model: str) -> int:
        with self._lock:
            found = self._db.execute("SELECT rows FROM baselines WHERE model = ?", (model,)).fetchone()
        return int(found[0]) if found else 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._db.execute("SELECT entry FROM keys WHERE key = ?", (key,)).fetchone()
        return json.loads(found[0]) if found else None

    def pending(self, model: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            found = self._db.execute("SELECT key, entry FROM keys WHERE status = 'pending'").fetchall()
        entries = [(key, json.loads(entry)) for key, entry in found]
        return [(k, e) for k, e in entries if model is None or e["model"] == model]

    def claim(self, key: str, model: str, status: str, *, rows: int | None = None, **details: Any) -> bool:
        """Record ``key`` with ``status`` unless some replica recorded it before (then False)."""
        with self._lock, write(self._db) as db:
            if db.execute("SELECT 1 FROM keys WHERE key = ?", (key,)).fetchone():
                return False
            self._put(db, key, {"model": model}, status, rows, details)
            return True

    def record(self, key: str, model: str, status: str, *, rows: int | None = None, **details: Any) -> None:
        """Set a key's status (merging ``details``); ``rows`` also moves the model's baseline."""
        with self._lock, write(self._db) as db:
            found = db.execute("SELECT entry FROM keys WHERE key = ?", (key,)).fetchone()
            self._put(db, key, json.loads(found[0]) if found else {"model": model}, status, rows, details)

    def settle(self, key: str, status: str, **details: Any) -> bool:
        """Move a ``pending`` key to ``status``; False if it was not pending (settled by another replica)."""
        with self._lock, write(self._db) as db:
            found = db.execute("SELECT entry FROM keys WHERE key = ? AND status = 'pending'", (key,)).fetchone()
            if found:
                entry = json.loads(found[0])
                self._put(db, key, entry, status, None, details)
            return found is not None

    @staticmethod
    def _put(db: Any, key: str, entry: dict[str, Any], status: str, rows: int | None, details: dict[str, Any]) -> None:
        entry.update(details, status=status, at=_now())
        db.execute(
            "INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET status = excluded.status,"
            " entry = excluded.entry",
            (key, entry["model"], status, json.dumps(entry, default=str)),
        )
        if rows is not None:
            db.execute(
                "INSERT INTO baselines VALUES (?, ?) ON CONFLICT (model) DO UPDATE SET rows = excluded.rows",
                (entry["model"], rows),
            )

    # -- records that could not be dead-lettered ----------------------------------------

    def failed_attempt(self, topic: str, partition: int, offset: int) -> int:
        """Count one more failure to dead-letter a record; returns the failures so far."""
        with self._lock, write(self._db) as db:
            db.execute(
                "INSERT INTO attempts VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET failures = failures + 1",
                (topic, partition, offset),
            )
            found = db.execute(
                "SELECT failures FROM attempts WHERE topic = ? AND partition = ? AND offset = ?",
                (topic, partition, offset),
            ).fetchone()
        return int(found[0])

    def poisoned(self, topic: str, partition: int, offset: int, error: str) -> None:
        with self._lock, write(self._db) as db:
            row = (topic, partition, offset, error, _now())
            db.execute("INSERT OR REPLACE INTO poison VALUES (?, ?, ?, ?, ?)", row)

    def poison(self) -> list[dict[str, Any]]:
        """Every record skipped because it could not be dead-lettered, oldest first."""
        with self._lock:
            found = self._db.execute("SELECT topic, partition, offset, error, at FROM poison ORDER BY at").fetchall()
        return [dict(zip(("topic", "partition", "offset", "error", "at"), row, strict=True)) for row in found]
