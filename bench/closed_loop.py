"""Latency of back-to-back requests on one keep-alive connection, each request timed alone.

wrk corrects its latencies for coordinated omission: a request that stalls for X ms also adds
samples for the requests a constant-rate client would have sent meanwhile, so one 60 ms stall
raises its 1-connection p99 by milliseconds. This client records only what each request took
(as ghz does for gRPC), so both views can be shown side by side.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit


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
