"""The landing store: append-only Parquet parts per model, written atomically.

``<data_dir>/landing/<model>/part-<time>-<id>.parquet`` with columns ``event_id``,
``occurred_at``, ``landed_at``, the spec's features and its target (no PII: the trigger strips it).
A part is written to a temporary name (``.parquet.tmp``), fsynced and renamed, so readers never see
half a file. The trigger lands through :func:`land`: the part's event ids are committed to the
:mod:`~pipelines.streaming.landing_index` between the write and the rename, which makes landing
exactly-once per event id across replicas and crashes (:func:`recover` finishes the renames a
crash interrupted).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.streaming.landing_index import LandingIndex


def model_dir(root: Path, model: str) -> Path:
    return root / model


def write_part(root: Path, model: str, frame: pd.DataFrame | pa.Table) -> Path:
    """Durably append ``frame`` (a DataFrame or an Arrow table) as one new part, outside the index
    (backfills, tests); returns its path."""
    return publish(stage(root, model, frame))


def land(root: Path, index: LandingIndex, model: str, table: pa.Table, digests: Mapping[str, int]) -> list[str]:
    """Land ``table`` (rows whose ``event_id`` are the keys of ``digests``) exactly once.

    Returns the ids another writer landed first (their rows are not landed here: the caller
    decides whether they are duplicates or conflicts); every other row is durably landed."""
    lost: list[str] = []
    while table.num_rows:
        staged = stage(root, model, table)
        taken = index.commit(model, staged.name.removesuffix(".tmp"), {i: digests[i] for i in _ids(table)})
        if not taken:
            publish(staged)
            break
        staged.unlink()
        lost += taken
        keep = pc.invert(pc.is_in(table.column("event_id"), pa.array(taken, pa.string())))
        table = table.filter(keep)
    return lost


def stage(root: Path, model: str, frame: pd.DataFrame | pa.Table) -> Path:
    """Write ``frame`` as a new part under its temporary name (invisible to readers), fsynced."""
    folder = model_dir(root, model)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet.tmp"
    if isinstance(frame, pa.Table):
        pq.write_table(frame, tmp)
    else:
        frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    return tmp


def publish(staged: Path) -> Path:
    """Make a staged part visible (atomic rename + directory fsync); idempotent."""
    final = staged.with_name(staged.name.removesuffix(".tmp"))
    try:
        os.replace(staged, final)
    except FileNotFoundError:
        if not final.exists():
            raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def recover(root: Path, index: LandingIndex, model: str, stale_after_s: float = 600) -> int:
    """Publish the staged parts whose ids were committed (a crash came between commit and rename);
    delete uncommitted ones older than ``stale_after_s`` (a crash before the commit). Returns how
    many parts were published."""
    published = 0
    for staged in sorted(model_dir(root, model).glob("part-*.parquet.tmp")):
        try:
            if index.committed(model, staged.name.removesuffix(".tmp")):
                publish(staged)
                published += 1
            elif time.time() - staged.stat().st_mtime > stale_after_s:
                staged.unlink()
        except FileNotFoundError:  # published or removed by another replica meanwhile
            continue
    return published


def _ids(table: pa.Table) -> list[str]:
    return table.column("event_id").to_pylist()


def parts(root: Path, model: str) -> list[Path]:
    return sorted(model_dir(root, model).glob("part-*.parquet"))


def row_count(root: Path, model: str) -> int:
    """Rows in the model's landed parts (Parquet footers only), backfills included."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts(root, model))


def event_ids(root: Path, model: str) -> set[str]:
    """The ids of every landed event of a model, read from the parts (the trigger asks its index)."""
    ids: set[str] = set()
    for p in parts(root, model):
        ids.update(pq.read_table(p, columns=["event_id"]).column(0).to_pylist())
    return ids


def read(root: Path, model: str, since: str | None = None, until: str | None = None) -> pd.DataFrame:
    """All landed rows of a model: :func:`pipelines.landing_store.read` on the landing folder."""
    from pipelines.landing_store import read as read_store
    from pipelines.storage import open_store

    return read_store(open_store(root.resolve().as_uri()), model, since or "", until or "")
