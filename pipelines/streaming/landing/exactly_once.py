"""The trigger's landing: append-only Parquet parts per model, exactly once per event id, on any store.

The store is a folder (``file://``, the default ``<data_dir>/landing``) or an object store
(``s3://bucket/prefix``), read and written through :class:`pipelines.storage.Store`. Parts are
``<model>/part-<time>-<id>.parquet`` with columns ``event_id``, ``occurred_at``, ``landed_at``,
the spec's features and its target (no PII: the trigger strips it); readers
(:mod:`pipelines.streaming.landing.parts`) see published parts only.

:func:`land` makes a part exactly-once without an atomic rename (S3 has none):

1. **stage** the part as ``<model>/_staging/<name>`` (invisible to readers; one atomic PUT);
2. **commit** its event ids to the :mod:`~pipelines.streaming.landing.index` under ``<name>``,
   all or nothing (ids another replica landed first are dropped and the rest staged again);
3. **publish** it as ``<model>/<name>`` with a conditional create (from the bytes in memory) and
   delete the staged copy.

A crash before 2 leaves an uncommitted staged part (garbage, deleted by :func:`recover` after
``stale_after_s``); between 2 and 3 a committed one, which :func:`recover` publishes (the trigger
runs it whenever partitions are assigned). So a row is visible at most once, and a replayed
batch finds its ids landed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.storage import Store
from pipelines.streaming.landing import parts
from pipelines.streaming.landing.index import LandingIndex

STAGING = "_staging"


def staged_key(model: str, name: str) -> str:
    return f"{model}/{STAGING}/{name}"


def land(store: Store, index: LandingIndex, model: str, table: pa.Table, digests: Mapping[str, int]) -> list[str]:
    """Land ``table`` (rows whose ``event_id`` are the keys of ``digests``) exactly once.

    Returns the ids another writer landed first (their rows are not landed here: the caller
    decides whether they are duplicates or conflicts); every other row is durably landed."""
    lost: list[str] = []
    while table.num_rows:
        name = parts.part_key(model).rsplit("/", 1)[-1]
        data = _parquet(table)
        store.put(staged_key(model, name), data)
        taken = index.commit(model, name, {i: digests[i] for i in _ids(table)})
        if not taken:
            publish(store, model, name, data)
            break
        store.delete(staged_key(model, name))
        lost += taken
        keep = pc.invert(pc.is_in(table.column("event_id"), pa.array(taken, pa.string())))
        table = table.filter(keep)
    return lost


def publish(store: Store, model: str, name: str, data: bytes | None = None) -> None:
    """Make a staged part visible (a conditional create: idempotent) and drop the staged copy."""
    staged = staged_key(model, name)
    store.put_if_absent(f"{model}/{name}", store.read_bytes(staged) if data is None else data)
    store.delete(staged)


def recover(store: Store, index: LandingIndex, model: str, stale_after_s: float = 600) -> int:
    """Publish the staged parts whose ids were committed (a crash came between commit and publish);
    delete uncommitted ones older than ``stale_after_s`` (a crash before the commit). Returns how
    many parts were published."""
    published = 0
    for key in store.list_keys(f"{model}/{STAGING}", suffix=".parquet"):
        name = key.rsplit("/", 1)[-1]
        try:
            if index.committed(model, name):
                publish(store, model, name)
                published += 1
            elif time.time() - _written_at(name) > stale_after_s:
                store.delete(key)
        except FileNotFoundError:  # published or removed by another replica meanwhile
            continue
    return published


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _written_at(name: str) -> float:
    """When a part was named: ``part-<time_ns>-<id>.parquet`` (now, for a name of another form)."""
    stamp = name.removeprefix("part-").split("-", 1)[0]
    return int(stamp) / 1e9 if stamp.isdigit() else time.time()


def _ids(table: pa.Table) -> list[str]:
    return table.column("event_id").to_pylist()
