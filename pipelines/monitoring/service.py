"""The monitoring service (``python -m pipelines.monitoring``): the loop's eyes.

* ``POST /events``: KServe's payload logger sends each request and response as a CloudEvent;
  the pair becomes an inference-log record on ``mlops.inference-log`` (:mod:`pipelines.monitoring.payload_log`).
  Predictors started with ``--inference_log`` publish there themselves (and log shadow scores).
* A consumer group reads ``mlops.inference-log`` and every model's ``outcome_topic``:
  - **drift**: champion rows are cut into windows of ``spec.drift.window`` rows per model version
    and compared with the training reference saved with that version (``reference.json`` in
    ``models:/<m>/<version>``, fetched once per version); see :mod:`pipelines.monitoring.drift`;
  - **live accuracy**: predictions are kept in a bounded sqlite store, outcomes are joined by
    request id, and the gate's metrics are computed over a rolling window per version and role;
    see :mod:`pipelines.monitoring.live_accuracy`.
* A drifted window, or a champion's live metric past the spec's floor/ceiling (with at least
  ``monitoring_min_labels`` labels), sends a retrain request to ``mlops.retrain-requests`` — at
  most one per model per ``monitoring_cooldown_s`` — and a ``drift.detected`` /
  ``accuracy.degraded`` event to ``mlops.model-events``.
* ``GET /metrics``: Prometheus gauges (per-feature drift, score shift, live metrics, ...).

Windows and rolling metrics live in memory (rebuilt from traffic after a restart); predictions and
the cool-down clock are kept under ``<data_dir>/monitoring``. Offsets are committed after a batch
is handled: at least once, and a replayed outcome is not counted twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request, Response
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feature_specs import InvalidFeature, Validator
from pipelines.monitoring.monitor import (
    PAYLOADS,
    Monitor,
    MonitoringSettings,
    References,
    Requester,
    RetrainRequests,
)
from pipelines.monitoring.payload_log import PayloadError, PayloadJoiner
from pipelines.streaming.topics import INFERENCE_LOG, ensure_topics, named

log = logging.getLogger("pipelines.monitoring")


class MonitoringService:
    """The consumer loop around a :class:`Monitor`, and the payload-logger sink."""

    def __init__(self, settings: MonitoringSettings, request_retrain: Requester | None = None) -> None:
        self.settings = settings
        self.retrains = RetrainRequests(settings)
        references = References(settings.monitoring_reference_uri, settings.tracking_uri)
        self.monitor = Monitor(settings, references.get, request_retrain or self.retrains)
        self.joiner = PayloadJoiner()
        self.validators = {m: Validator(s) for m, s in self.monitor.specs.items()}
        self.outcome_topics = {named(s.outcome_topic, settings): m for m, s in self.monitor.specs.items()}
        self.log_topic = named(INFERENCE_LOG, settings)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()

    # -- payload logger -----------------------------------------------------------------------

    def on_cloudevent(self, headers: Mapping[str, str], body: bytes) -> str:
        """Join and publish; returns what happened (``pending``, ``published``, or the refusal)."""
        try:
            record = self.joiner.add(headers, body)
            if record is None:
                return "pending"
            spec = self.monitor.specs.get(record["model"])
            if spec is None:
                raise PayloadError(f"model {record['model']!r} is not monitored here")
            validated = self.validators[spec.name].columns(record["inputs"])
        except (PayloadError, InvalidFeature, KeyError) as exc:
            PAYLOADS.labels("refused").inc()
            return f"refused: {exc}"
        from predictors.observability.inference_log import encode

        record["inputs"] = validated
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    **self.settings.kafka_options(), linger_ms=20, bootstrap_timeout_ms=10_000
                )
            self._producer.send(self.log_topic, key=record["request_id"].encode(), value=encode(record))
        PAYLOADS.labels("published").inc()
        return "published"

    # -- consumer -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped; a Kafka failure reconnects after a pause that doubles."""
        delay = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._session()
                    delay = 1.0
                except KafkaError as exc:
                    log.warning("Kafka at %s failed (%s); retrying in %.0fs", self.settings.kafka_bootstrap, exc, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.settings.kafka_retry_max_s)
        finally:
            self.close()

    def _session(self) -> None:
        ensure_topics(self.settings, list(self.monitor.specs), timeout_ms=5000)
        consumer = KafkaConsumer(
            **self.settings.kafka_options(),
            group_id=self.settings.monitoring_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            bootstrap_timeout_ms=5000,
        )
        try:
            topics = [self.log_topic, *self.outcome_topics]
            for topic in topics:  # metadata first: joining the group without it assigns nothing
                consumer.partitions_for_topic(topic)
            consumer.subscribe(topics)
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                if consumer.assignment():
                    self.ready.set()
                if batch:
                    by_topic: dict[str, list[bytes | None]] = {}
                    for tp, records in batch.items():  # several partitions of one topic
                        by_topic.setdefault(tp.topic, []).extend(r.value for r in records)
                    self.handle(by_topic)
                    consumer.commit()
        finally:
            consumer.close(autocommit=False)

    def handle(self, by_topic: Mapping[str, Sequence[bytes | None]]) -> None:
        """Inference records first, so an outcome in the same batch finds its prediction."""
        for raw in by_topic.get(self.log_topic, ()):
            try:
                record = json.loads(raw or b"")
                if isinstance(record, dict) and record.get("request_id"):
                    self.monitor.on_record(record)
            except Exception:  # one odd record must not stop monitoring
                log.exception("inference-log record skipped")
        for topic, values in by_topic.items():
            if topic in self.outcome_topics:
                self.monitor.on_outcomes(self.outcome_topics[topic], values)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
        self.retrains.close()
        self.monitor.close()


def create_monitoring_app(service: MonitoringService) -> FastAPI:
    app = FastAPI(title="ConstructOS monitoring")

    @app.post("/events")
    async def events(request: Request) -> dict[str, str]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return {"result": service.on_cloudevent(headers, await request.body())}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"consuming": service.ready.is_set()}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m pipelines.monitoring", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, help="HTTP port (default: CONSTRUCTOS_MONITORING_PORT or 8000)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = MonitoringSettings()
    service = MonitoringService(settings)
    consumer = threading.Thread(target=service.run, name="monitoring-consumer", daemon=True)
    consumer.start()
    app = create_monitoring_app(service)
    uvicorn.run(app, host="0.0.0.0", port=args.port or settings.monitoring_port, log_level="warning")  # until SIGTERM
    service.stop()
    consumer.join(timeout=10)


if __name__ == "__main__":
    main()
