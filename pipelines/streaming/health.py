"""The trigger's metrics and health port (``CONSTRUCTOS_TRIGGER_METRICS_PORT``, 0: off).

* ``GET /metrics``: the trigger's counters (``constructos_trigger_events_total{outcome=...}``, one
  sample per key of ``Trigger.stats``) and the age of its loop's last heartbeat, for Prometheus.
* ``GET /healthz``: 200 while the consumer loop beats (it beats on every poll and before every
  reconnect pause), 503 once it has been silent longer than ``max_silence_s`` — a hung loop, which
  the Deployment's liveness probe then restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


class TriggerCollector(Collector):
    def __init__(self, stats: Mapping[str, int], heartbeat: Heartbeat) -> None:
        self.stats, self.heartbeat = stats, heartbeat

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


def serve(
    port: int, stats: Mapping[str, int], heartbeat: Heartbeat, max_silence_s: float, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Start the port in a daemon thread; returns the server (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(TriggerCollector(stats, heartbeat))
    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        "/healthz": lambda: (
            (200, "text/plain", b"ok\n")
            if heartbeat.silence_s() <= max_silence_s
            else (503, "text/plain", f"no heartbeat for {heartbeat.silence_s():.0f}s\n".encode())
        ),
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
