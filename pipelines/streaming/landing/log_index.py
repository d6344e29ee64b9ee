"""The landing index on an object store: an append-only commit log per model, shared by replicas.

``_index/<model>/<seq:020d>.json`` holds one committed part: ``{"part", "ids", "digests", "scheme"}``
(``scheme``: of the digests, :mod:`pipelines.streaming.intake.digests`; an entry written before scheme 2
has none and is read as legacy, both formats are read). A
replica commits by creating the next sequence number with a conditional create
(:meth:`pipelines.storage.Store.put_if_absent`): of two replicas racing for a number exactly one
wins, the other reads the winner's entry and tries again, so the log is a total order of commits
and no event id is in two entries (the optimistic concurrency of Delta Lake's ``_delta_log``).

Each replica keeps what it has read of the log in a local :class:`SqliteIndex` (on disk: memory
stays flat however long the log grows) and catches up by reading ``seq+1, seq+2, ...`` until one
is not found, with GETs only (no listing).

**Relies on** conditional create (``PUT`` with ``If-None-Match: *``) and strong read-after-write
consistency of GET (a created entry is visible to every replica at once): AWS S3 since 2020-12
(reads) and 2024-08 (conditional writes), versitygw (tested here); check any other S3 store.
**Costs** one GET (the miss that ends the catch-up) and one PUT per commit; a fresh replica (or a
lost cache) replays the whole log once. Checkpoints (a snapshot of the ids every N entries) are
future work.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.settings import Settings
from pipelines.storage import Store
from pipelines.streaming.intake.digests import BLAKE2B, LEGACY
from pipelines.streaming.landing.index import LandingIndex, SqliteIndex

PREFIX = "_index"


def log_key(model: str, seq: int) -> str:
    return f"{PREFIX}/{model}/{seq:020d}.json"


class LogIndex:
    """:class:`~pipelines.streaming.landing.index.LandingIndex` as a commit log on ``store``, cached
    under ``cache_dir`` (a folder per store URI; replicas may share it or keep their own)."""

    def __init__(self, store: Store, cache_dir: Path) -> None:
        self.store = store
        self.cache = SqliteIndex(cache_dir / hashlib.sha256(store.uri.encode()).hexdigest()[:16])
        self._lock = threading.Lock()

    def landed(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        """From the cache, without a catch-up (may be stale: :meth:`commit` is the arbiter)."""
        return self.cache.landed(model, ids)

    def commit(self, model: str, part: str, entries: Mapping[str, int]) -> list[str]:
        ids = sorted(entries)
        entry = {"part": part, "ids": ids, "digests": [entries[i] for i in ids], "scheme": BLAKE2B}
        body = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            while True:
                seq = self._catch_up(model)
                if self.cache.committed(model, part):
                    return []  # ours: a retried PUT that had succeeded, read back from the log
                if taken := self.cache.landed(model, ids):
                    return list(taken)
                if self.store.put_if_absent(log_key(model, seq), body.encode()):
                    self._apply(model, part, ids, [entries[i] for i in ids], BLAKE2B)
                    return []

    def committed(self, model: str, part: str) -> bool:
        with self._lock:
            self._catch_up(model)
        return self.cache.committed(model, part)

    def rows(self, model: str) -> int:
        with self._lock:
            self._catch_up(model)
        return self.cache.rows(model)

    def close(self) -> None:
        self.cache.close()

    def _catch_up(self, model: str) -> int:
        """Apply every log entry the cache lacks; returns the next free sequence number."""
        while True:
            seq = self.cache.parts(model)
            try:
                entry = json.loads(self.store.read_bytes(log_key(model, seq)))
            except FileNotFoundError:
                return seq
            self._apply(model, entry["part"], entry["ids"], entry["digests"], entry.get("scheme", LEGACY))

    def _apply(self, model: str, part: str, ids: list[str], digests: list[int], scheme: int) -> None:
        if self.cache.committed(model, part):
            return  # another process sharing the cache applied it
        try:
            clash = self.cache.commit(model, part, dict(zip(ids, digests, strict=True)), scheme)
        except sqlite3.IntegrityError:  # the same, in the instant between the check and the commit
            return
        if clash:
            raise RuntimeError(f"landing log of {model} on {self.store.uri}: {part} repeats {len(clash)} landed ids")


def open_index(settings: Settings) -> LandingIndex:
    """The landing index of ``settings``' store: SQLite beside a folder, the commit log on S3."""
    store = settings.landing_store
    if store.local:
        return SqliteIndex(settings.landing_dir)
    return LogIndex(store, settings.landing_index_cache)
