"""The trigger's memory of retraining, persisted as one JSON file (``Settings.trigger_state_path``).

Per model: how many rows were landed when its last run was launched (the baseline of "new rows").
Per trigger key: what became of it (``pending`` → ``launched`` | ``failed``, or ``skipped``).
A key is recorded *before* its launch, so a key is launched once; a ``pending`` key found at
start-up (the process died while launching) is launched again with the same key, which the
launcher can use to de-duplicate.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class RetrainState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        data = json.loads(path.read_text()) if path.exists() else {}
        self._baseline: dict[str, int] = data.get("rows_at_last_run", {})
        self._keys: dict[str, dict[str, Any]] = data.get("keys", {})

    def rows_at_last_run(self, model: str) -> int:
        with self._lock:
            return self._baseline.get(model, 0)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._keys.get(key)
            return dict(entry) if entry else None

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(k, dict(v)) for k, v in self._keys.items() if v["status"] == "pending"]

    def record(self, key: str, model: str, status: str, *, rows: int | None = None, **details: Any) -> None:
        """Set a key's status (merging ``details``); ``rows`` also moves the model's baseline."""
        with self._lock:
            entry = self._keys.setdefault(key, {"model": model})
            entry.update(details, status=status, at=datetime.now(UTC).isoformat(timespec="seconds"))
            if rows is not None:
                self._baseline[model] = rows
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"rows_at_last_run": self._baseline, "keys": self._keys}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
