"""The trigger's metrics and health port (``CONSTRUCTOS_TRIGGER_METRICS_PORT``, 0: off).

* ``GET /metrics``: the trigger's counters (``constructos_trigger_events_total{outcome=...}``, one
  sample per key of ``Trigger.stats``) and the age of its loop's last heartbeat, for Prometheus.
* ``GET /healthz``: 200 while the trigger makes progress; 503 (naming why) once the consumer loop
  has been silent longer than ``max_silence_s`` (a hung loop: it beats on every poll and before
  every reconnect pause), or once an assigned partition has had records waiting and no batch
  settled for longer than ``CONSTRUCTOS_TRIGGER_STALL_S`` (a loop that beats but goes nowhere).
  The Deployment's liveness probe then restarts the pod.
* ``constructos_trigger_partition_settled_age_seconds{topic,partition}``: per assigned partition,
  seconds since a batch last settled there (landed, dead letters flushed, offsets committed) or
  since it was last seen with nothing waiting; ``constructos_trigger_partition_waiting_records``:
  records past its last settled offset, as of the loop's last look.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Heartbeat:
    """Monotonic time of the last sign of life of a loop."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    def silence_s(self) -> float:
        return time.monotonic() - self.at


log = logging.getLogger("pipelines.streaming.trigger")
Partition = tuple[str, int]  # topic, partition


class Progress:
    """Per assigned partition: when a batch last settled there, and how many records wait.

    The consumer loop reports (:meth:`assigned`, :meth:`waiting`, :meth:`settled`); the health port
    reads from its own thread, so a loop blocked for good is still seen as stalled."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._settled: dict[Partition, float] = {}
        self._waiting: dict[Partition, int] = {}
        self._reported: set[Partition] = set()

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """The partitions assigned now: new ones start their clock, revoked ones are forgotten."""
        now, current = time.monotonic(), set(partitions)
        with self._lock:
            self._settled = {p: self._settled.get(p, now) for p in current}
            self._waiting = {p: n for p, n in self._waiting.items() if p in current}

    def waiting(self, partition: Partition, records: int) -> None:
        with self._lock:
            if partition not in self._settled:
                return
            self._waiting[partition] = records
            if records <= 0:  # caught up: nothing to settle, nothing stalled
                self._settled[partition] = time.monotonic()

    def settled(self, partitions: Iterable[Partition]) -> None:
        now = time.monotonic()
        with self._lock:
            for p in partitions:
                if p in self._settled:
                    self._settled[p] = now
                    if p in self._reported:
                        self._reported.discard(p)
                        log.warning("partition %s/%d settles again", *p)

    def ages(self) -> dict[Partition, tuple[float, int]]:
        """Per assigned partition: seconds since it last settled, and the records waiting."""
        now = time.monotonic()
        with self._lock:
            return {p: (now - at, self._waiting.get(p, 0)) for p, at in sorted(self._settled.items())}

    def stalled(self) -> dict[Partition, tuple[float, int]]:
        """The partitions with records waiting and nothing settled for longer than ``stall_s``
        (each logged once per stall, naming it)."""
        found = {p: a for p, a in self.ages().items() if a[1] > 0 and a[0] > self.stall_s}
        with self._lock:
            for p, (age, records) in found.items():
                if p not in self._reported:
                    self._reported.add(p)
                    log.error(
                        "partition %s/%d is stalled: %d record(s) waiting, none settled for %.0fs", *p, records, age
                    )
        return found


class TriggerCollector(Collector):
    def __init__(self, stats: Mapping[str, int], heartbeat: Heartbeat, progress: Progress | None = None) -> None:
        self.stats, self.heartbeat, self.progress = stats, heartbeat, progress

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        events = CounterMetricFamily(
            "constructos_trigger_events",
            "What the trigger did, by outcome (landed, dead-lettered, ...)",
            labels=["outcome"],
        )
        for outcome, count in sorted(dict(self.stats).items()):
            events.add_metric([outcome], count)
        yield events
        yield GaugeMetricFamily(
            "constructos_trigger_heartbeat_age_seconds",
            "Seconds since the consumer loop last polled or paused to reconnect",
            value=self.heartbeat.silence_s(),
        )
        if self.progress is None:
            return
        ages = GaugeMetricFamily(
            "constructos_trigger_partition_settled_age_seconds",
            "Seconds since a batch last settled on the partition (or it was last seen caught up)",
            labels=["topic", "partition"],
        )
        waiting = GaugeMetricFamily(
            "constructos_trigger_partition_waiting_records",
            "Records of the partition past its last settled offset",
            labels=["topic", "partition"],
        )
        for (topic, partition), (age, records) in self.progress.ages().items():
            ages.add_metric([topic, str(partition)], age)
            waiting.add_metric([topic, str(partition)], records)
        yield ages
        yield waiting


def health(heartbeat: Heartbeat, max_silence_s: float, progress: Progress | None) -> tuple[int, str]:
    """``/healthz``'s status and text."""
    if heartbeat.silence_s() > max_silence_s:
        return 503, f"no heartbeat for {heartbeat.silence_s():.0f}s"
    stalled = progress.stalled() if progress is not None else {}
    if stalled:
        return 503, "; ".join(
            f"stalled: {t}/{p} has {n} record(s) waiting, none settled for {age:.0f}s"
            for (t, p), (age, n) in stalled.items()
        )
    return 200, "ok"


def serve_health(
    port: int,
    stats: Mapping[str, int],
    heartbeat: Heartbeat,
    max_silence_s: float,
    host: str = "0.0.0.0",
    progress: Progress | None = None,
) -> ThreadingHTTPServer:
    """Start the port in a daemon thread; returns the server (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(TriggerCollector(stats, heartbeat, progress))

    def healthz() -> tuple[int, str, bytes]:
        status, text = health(heartbeat, max_silence_s, progress)
        return status, "text/plain", f"{text}\n".encode()

    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        "/healthz": healthz,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="trigger-health", daemon=True).start()
    return server
