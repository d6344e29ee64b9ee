"""The load generators of the serving benchmark, pinned to CPU 1 (the servers have CPU 0).

- ``wrk`` (REST): throughput, and latency corrected for coordinated omission (a request that
  stalls for X ms also adds samples for the requests a constant-rate client would have sent
  meanwhile, so one 60 ms stall raises a 1-connection p99 by milliseconds);
- ``ghz`` (gRPC, built by ``make ghz``): each call timed alone;
- :func:`time_each`: one keep-alive connection, back-to-back requests, each timed alone, so both
  views of REST latency can be shown side by side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

GHZ_VERSION = "v0.121.0"
PROTO = Path(__file__).resolve().parents[1] / "tests" / "oip" / "grpc_predict_v2.proto"


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    cmd = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def pct(p: str) -> float:
        value, u = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * unit[u]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": pct("50"), "p99": pct("99")}


def tools_cache() -> Path:
    """Where the Makefile caches slow downloads and builds, keyed by version (CONSTRUCTOS_TOOLS_CACHE)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "constructos"
    return Path(os.environ.get("CONSTRUCTOS_TOOLS_CACHE") or default)


def find_ghz() -> str | None:
    built = tools_cache() / f"ghz-{GHZ_VERSION}" / "ghz"
    return os.environ.get("GHZ") or (str(built) if built.exists() else shutil.which("ghz"))


def ghz(
    ghz_bin: str, address: str, request: str, connections: int, seconds: int, strict: bool = True
) -> dict[str, float]:
    """ghz calling ModelInfer with ``request`` (protobuf JSON)."""
    cmd = [*pin(1), ghz_bin, "--insecure", "--proto", str(PROTO), "--call",
           "inference.GRPCInferenceService/ModelInfer", "-d", request, "-c", str(connections),
           "--connections", str(connections), "-z", f"{seconds}s", "-O", "json", address]  # fmt: skip
    report = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    failed = {k: v for k, v in report.get("statusCodeDistribution", {}).items() if k != "OK"}
    # the calls in flight when the run ends are cut ("Unavailable: transport is closing"): at most one per connection
    if strict and sum(failed.values()) > connections:
        raise RuntimeError(f"gRPC calls failed: {failed}")
    pcts = {p["percentage"]: p["latency"] / 1e6 for p in report["latencyDistribution"]}
    return {"rps": report["rps"], "p50": pcts[50], "p99": pcts[99]}


def time_each(url: str, body: bytes, seconds: float, cpu: int | None = 1) -> dict[str, float]:
    """p50/p99/max in ms of a closed loop of POSTs of ``body`` (JSON) to ``url`` for ``seconds``,
    run on ``cpu`` (the load generator's core) when this machine has it."""
    parts = urlsplit(url)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    affinity = os.sched_getaffinity(0)
    if cpu is not None and cpu in affinity and len(affinity) > 1:
        os.sched_setaffinity(0, {cpu})
    try:
        with socket.create_connection((parts.hostname, parts.port or 80)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            took: list[float] = []
            deadline = time.perf_counter() + seconds
            while (started := time.perf_counter()) < deadline:
                conn.sendall(request)
                _read_response(conn)
                took.append((time.perf_counter() - started) * 1e3)
    finally:
        os.sched_setaffinity(0, affinity)
    took.sort()
    return {"p50": took[len(took) // 2], "p99": took[int(len(took) * 0.99)], "max": took[-1]}


def _read_response(conn: socket.socket) -> None:
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        data += _recv(conn)
    head = data[:end].decode("latin-1").lower()
    if not head.startswith("http/1.1 200"):
        raise RuntimeError(f"request failed: {head.splitlines()[0]}")
    length = int(head.split("content-length:")[1].split("\r\n")[0])
    while len(data) < end + 4 + length:
        data += _recv(conn)


def _recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk
