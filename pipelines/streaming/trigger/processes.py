"""The processes below the trigger's: ended when it stops with a launch handed back (Linux ``/proc``)."""

from __future__ import annotations

import contextlib
import os
import signal
import time


def end_descendants(grace_s: float = 3.0) -> None:
    """SIGTERM every process below this one, then SIGKILL what is left after ``grace_s`` (Linux)."""
    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in [p for p in pids if _alive(p)]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and (above := parent(int(entry))) is not None:
            children.setdefault(above, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def parent(pid: int) -> int | None:
    """The parent of ``pid``, or None when it is gone (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
