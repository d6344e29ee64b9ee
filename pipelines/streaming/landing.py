"""The landing store: append-only Parquet parts per model, written atomically.

``<data_dir>/landing/<model>/part-<time>-<id>.parquet`` with columns ``event_id``,
``occurred_at``, ``landed_at``, the spec's features and its target (no PII: the trigger strips it).
A part is written to a temporary name, fsynced and renamed, so readers never see half a file.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def model_dir(root: Path, model: str) -> Path:
    return root / model


def write_part(root: Path, model: str, frame: pd.DataFrame | pa.Table) -> Path:
    """Durably append ``frame`` (a DataFrame or an Arrow table) as one new part; returns its path."""
    folder = model_dir(root, model)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = final.with_suffix(".tmp")
    if isinstance(frame, pa.Table):
        pq.write_table(frame, tmp)
    else:
        frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def parts(root: Path, model: str) -> list[Path]:
    return sorted(model_dir(root, model).glob("part-*.parquet"))


def event_ids(root: Path, model: str) -> set[str]:
    """The ids of every landed event of a model (reads only that column): the trigger's de-duplication."""
    ids: set[str] = set()
    for p in parts(root, model):
        ids.update(pq.read_table(p, columns=["event_id"]).column(0).to_pylist())
    return ids


def read(root: Path, model: str, since: str | None = None, until: str | None = None) -> pd.DataFrame:
    """All landed rows of a model (first copy of each event id), optionally in a time window
    on ``occurred_at`` (ISO-8601 bounds, ``since`` inclusive, ``until`` exclusive)."""
    files = parts(root, model)
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
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
