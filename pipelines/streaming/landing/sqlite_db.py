"""SQLite for the landing index (:mod:`~pipelines.streaming.landing.index`, and the local cache of
the object-store landing log), set up for several trigger replicas sharing one folder.

WAL lets readers run beside the one writer; ``BEGIN IMMEDIATE`` takes the write lock up front, so
a read-then-write transaction (land a batch of ids) is atomic across processes;
``synchronous=FULL`` makes a commit survive a power cut. WAL needs the replicas on one host (or a
volume with working POSIX locks and shared memory): across hosts use an object-store backend.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WAL_ATTEMPTS = 50
CACHE_KIB = 16 * 1024  # page cache per connection: bounds memory however large the file grows


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    for attempt in range(WAL_ATTEMPTS):  # a new file's first switch to WAL answers "locked" at once to others
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic read-modify-write transaction (holds the database's write lock)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
