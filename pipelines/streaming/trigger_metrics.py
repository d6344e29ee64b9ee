"""The trigger's Prometheus metrics, read from its own counters when scraped (``/metrics`` on
``CONSTRUCTOS_TRIGGER_METRICS_PORT``; 0, the default, serves none).

* ``constructos_trigger_events_total{model,result}``: events landed, skipped as duplicates, rejected to the DLQ.
* ``constructos_trigger_batches_total``: polled batches made durable (landed, dead-lettered, committed).
* ``constructos_trigger_launches{model,status}``: trigger keys by status (pending, launched, failed, skipped).
* ``constructos_trigger_connected``: 1 while the trigger holds a session with the brokers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pipelines.streaming.trigger import Trigger

RESULTS = ("landed", "duplicates", "rejected")


class TriggerCollector(Collector):
    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        t = self.trigger
        events = CounterMetricFamily(
            "constructos_trigger_events", "Source events by model and result.", labels=["model", "result"]
        )
        for model in t.models:
            for result in RESULTS:
                events.add_metric([model, result], t.stats[f"{model}:{result}"])
        yield events
        yield CounterMetricFamily("constructos_trigger_batches", "Batches made durable.", value=t.stats["batches"])
        launches = GaugeMetricFamily(
            "constructos_trigger_launches", "Retraining keys by model and status.", labels=["model", "status"]
        )
        by_status = Counter((entry["model"], entry["status"]) for entry in t.state.entries())
        for (model, status), count in sorted(by_status.items()):
            launches.add_metric([model, status], count)
        yield launches
        yield GaugeMetricFamily(
            "constructos_trigger_connected",
            "1 once the current session with the brokers is established.",
            value=float(t.connected),
        )


def serve_metrics(trigger: Trigger, port: int) -> None:
    """Register the trigger's collector and serve ``/metrics`` on ``port`` (a daemon thread)."""
    REGISTRY.register(TriggerCollector(trigger))
    start_http_server(port)
