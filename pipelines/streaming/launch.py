"""Start a training run from code (the Kafka trigger calls this): kfp.local or a KFP endpoint,
chosen by ``settings.pipeline_runner``. A key is claimed once, atomically, under
``<data_dir>/launches/``: the same key never makes two runs, even after a failed one (the caller
decides whether a new key retries)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from pipelines.settings import get_settings

log = logging.getLogger(__name__)


def _ledger(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:150]
    return get_settings().data_dir / "launches" / f"{safe}.json"


def _claim(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` only if it does not exist (atomic); False when the key is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _update(path: Path, **fields: Any) -> None:
    record = {**json.loads(path.read_text()), **fields}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def launch_training(model: str, *, key: str, **params: Any) -> str:
    """Run (locally) or submit (KFP) the training pipeline for ``model`` once per ``key``.

    Returns the run's id: the pipeline run name locally, the KFP run id on a cluster. A key seen
    before returns what it returned then (or ``""`` while that local run is still going).
    """
    settings = get_settings()
    path = _ledger(key)
    record = {"model": model, "key": key, "runner": settings.pipeline_runner, "started": time.time(), "run_id": ""}
    if not _claim(path, record):
        previous = json.loads(path.read_text())
        log.info("launch: key %s already launched (%s)", key, previous.get("run_id") or previous.get("status"))
        return str(previous.get("run_id", ""))
    try:
        if settings.pipeline_runner == "kfp":
            from pipelines.training.submit import submit

            run_id = submit(model, key=key, **params)
        else:
            from pipelines.training.run import run_local

            run_id = run_local(model, **params).pipeline_run_id
    except Exception as exc:
        _update(path, status="failed", error=str(exc)[:2000])
        raise
    _update(path, status="launched" if settings.pipeline_runner == "kfp" else "finished", run_id=run_id)
    return run_id
