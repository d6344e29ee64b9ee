"""The landing layout on any store (a folder or ``s3://``): ``<model>/part-*.parquet``.

A part is committed by one conditional create (:meth:`pipelines.storage.Store.put_if_absent`), so
it is visible whole or not at all, and a part key written twice (a retry, or two replicas landing
the same Kafka offsets under a deterministic key) is stored once. Readers keep the first copy of
each event id.
"""

from __future__ import annotations

import io
import time
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.storage import Store


def part_key(model: str, name: str | None = None) -> str:
    """``<model>/part-<name>.parquet``; a unique name (time + random) unless one is given."""
    return f"{model}/part-{name or f'{time.time_ns()}-{uuid.uuid4().hex[:8]}'}.parquet"


def write_part(store: Store, model: str, frame: pd.DataFrame | pa.Table, *, name: str | None = None) -> str | None:
    """Commit ``frame`` as one part; returns its key, or None when a part of that name exists
    (possible only with a given ``name``: the rows were landed before)."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    key = part_key(model, name)
    return key if store.put_if_absent(key, buffer.getvalue()) else None


def part_keys(store: Store, model: str) -> list[str]:
    """The model's published parts: ``<model>/part-*.parquet`` only (not the staged ones in a sub-folder)."""
    return [
        k
        for k in store.list_keys(model, suffix=".parquet")
        if k.startswith(f"{model}/part-") and "/" not in k[len(model) + 1 :]
    ]


def row_count(store: Store, model: str) -> int:
    """Rows in the model's published parts, backfills included (Parquet footers only: ranged reads)."""
    total = 0
    for key in part_keys(store, model):
        with store.open(key) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_landed(store: Store, model: str, since: str = "", until: str = "") -> pd.DataFrame:
    """Every landed row of ``model`` (first copy of each event id), optionally in a window on
    ``occurred_at`` (ISO-8601 bounds, ``since`` inclusive, ``until`` exclusive)."""
    keys = part_keys(store, model)
    if not keys:
        return pd.DataFrame()
    blobs = store.read_many(keys)
    frame = pd.concat([pd.read_parquet(io.BytesIO(blobs[k])) for k in keys], ignore_index=True)
    frame = frame.drop_duplicates("event_id", keep="first")
    if since or until:
        when = pd.to_datetime(frame["occurred_at"], utc=True, format="ISO8601")
        keep = pd.Series(True, index=frame.index)
        if since:
            keep &= when >= _utc(since)
        if until:
            keep &= when < _utc(until)
        frame = frame[keep]
    return frame.reset_index(drop=True)


def _utc(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
