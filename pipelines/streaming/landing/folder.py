"""A local landing folder (tests, backfills, benchmarks): the landing layout of
:mod:`~pipelines.streaming.landing.parts` on a path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.storage import Store, open_store
from pipelines.streaming.landing import parts


def _folder(root: Path) -> Store:
    return open_store(root.resolve().as_uri())


def write_folder_part(root: Path, model: str, frame: pd.DataFrame | pa.Table) -> Path:
    """Durably append ``frame`` as one new part, outside the index (backfills, tests); returns its path."""
    key = parts.write_part(_folder(root), model, frame)
    assert key is not None  # a fresh unique name
    return root / key


def folder_parts(root: Path, model: str) -> list[Path]:
    return sorted((root / model).glob("part-*.parquet"))


def folder_event_ids(root: Path, model: str) -> set[str]:
    """The ids of every landed event of a model, read from the parts (the trigger asks its index)."""
    ids: set[str] = set()
    for p in folder_parts(root, model):
        ids.update(pq.read_table(p, columns=["event_id"]).column(0).to_pylist())
    return ids


def read_folder(root: Path, model: str, since: str | None = None, until: str | None = None) -> pd.DataFrame:
    """All landed rows of a model: :func:`~pipelines.streaming.landing.parts.read_landed` on the landing folder."""
    return parts.read_landed(_folder(root), model, since or "", until or "")
