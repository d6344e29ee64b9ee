"""extract: the model's landed rows (optionally a time window) -> a Parquet snapshot + content hash."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.storage import Store
from pipelines.streaming.landing import parts as landing_parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    path: Path
    rows: int
    data_hash: str


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the rows and column names, independent of row and column order."""
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()
    ordered = frame[sorted(frame.columns)]
    if "event_id" in ordered:
        ordered = ordered.sort_values("event_id", kind="stable")
    rows = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    digest = hashlib.sha256(",".join(ordered.columns).encode())
    digest.update(rows.tobytes())
    return digest.hexdigest()


def extract(landing: Store | Path, model: str, out: Path, *, since: str = "", until: str = "") -> Snapshot:
    """Write every landed row of ``model`` in ``[since, until)`` to ``out`` (Parquet).

    ``landing`` is the landing store (a folder is taken as ``file://``). Columns are kept as
    landed (even unexpected ones), so that validate sees the real data.
    """
    store = landing if isinstance(landing, Store) else Store(Path(landing).resolve().as_uri())
    frame = landing_parts.read_landed(store, model, since, until)
    if frame.empty:
        raise ValueError(f"no landed rows for '{model}' in {store.url(model)} (window {since or '-'}..{until or '-'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    snapshot = Snapshot(out, len(frame), content_hash(frame))
    log.info("extract: %s rows of %s, hash %s", f"{snapshot.rows:,}", model, snapshot.data_hash[:12])
    return snapshot
