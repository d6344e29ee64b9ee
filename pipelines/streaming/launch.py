"""Start a training run from code (the Kafka trigger calls this): kfp.local or a KFP endpoint,
chosen by ``settings.pipeline_runner``.

Each key has a ledger file under ``<data_dir>/launches/`` and a lock held (``flock``) for as long as
its launch runs. A key that launched returns its run id again; a key that failed raises again (the
caller decides whether a new key retries); a key whose launch is running elsewhere raises
:class:`LaunchInProgress`; a key whose ledger says "running" while nobody holds its lock was
interrupted by a crash, and is launched again (``attempt`` counts), loudly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.settings import get_settings

log = logging.getLogger(__name__)


def _ledger(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:150]
    return get_settings().data_dir / "launches" / f"{safe}.json"


class LaunchInProgress(RuntimeError):
    """The key's launch is running in another process (or thread) right now."""


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold the key's lock for the whole launch; released by the kernel if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchInProgress(f"launch {path.stem} is running in another process") from None
        yield
    finally:
        os.close(fd)


def _write(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def launch_training(model: str, *, key: str, **params: Any) -> str:
    """Run (locally) or submit (KFP) the training pipeline for ``model`` once per ``key``.

    Returns the run's id (never empty): the pipeline run name locally, the KFP run id on a cluster.
    """
    path = _ledger(key)
    with _held(path):
        previous = json.loads(path.read_text()) if path.exists() else {}
        if previous.get("run_id"):
            log.info("launch: key %s already launched: run %s", key, previous["run_id"])
            return str(previous["run_id"])
        if previous.get("status") == "failed":
            raise RuntimeError(f"launch {key} failed before: {previous.get('error', '')[:500]}")
        attempt = int(previous.get("attempt", 0)) + 1
        if previous:
            log.warning("launch: key %s was interrupted (attempt %d died): launching it again", key, attempt - 1)
        return _launch(path, model, key, attempt, params)


def _launch(path: Path, model: str, key: str, attempt: int, params: dict[str, Any]) -> str:
    settings = get_settings()
    record = {"model": model, "key": key, "runner": settings.pipeline_runner, "attempt": attempt}
    _write(path, record | {"status": "running", "started": time.time(), "run_id": ""})
    try:
        if settings.pipeline_runner == "dry-run":
            run_id = f"dry-run-{key}"
        elif settings.pipeline_runner == "kfp":
            from pipelines.training.submit import submit

            run_id = submit(model, key=key, **params)
        else:
            from pipelines.training.run import run_local

            run_id = run_local(model, **params).pipeline_run_id
        if not run_id:
            raise RuntimeError("the runner returned no run id")
    except Exception as exc:
        _write(path, record | {"status": "failed", "error": str(exc)[:2000]})
        raise
    status = "finished" if settings.pipeline_runner == "local" else "launched"
    _write(path, record | {"status": status, "run_id": run_id})
    return str(run_id)
