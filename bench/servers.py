"""The servers of the serving benchmark: started pinned to CPU 0, used once they answer."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.load import pin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    cmd: list[str], ready: Callable[[], bool], extra_env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    env = os.environ | {"KSERVE_LOGLEVEL": "WARNING"} | (extra_env or {})
    proc = subprocess.Popen([*pin(0), *cmd], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # a busy machine loads slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        if ready():
            return proc
        time.sleep(0.3)
    proc.kill()
    raise TimeoutError(cmd)


def model_ready(port: int, model: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    return ready


@contextmanager
def running(cmd: list[str], ready: Callable[[], bool], env: dict[str, str], cwd: Path | None = None) -> Iterator[None]:
    proc = start(cmd, ready, env, cwd)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
