"""The monitoring service (``python -m pipelines.monitoring``): the loop's eyes.

* ``POST /events``: KServe's payload logger sends each request and response as a CloudEvent;
  the pair becomes an inference-log record on ``mlops.inference-log`` (:mod:`pipelines.payload_log`).
  Predictors started with ``--inference_log`` publish there themselves (and log shadow scores).
* A consumer group reads ``mlops.inference-log`` and every model's ``outcome_topic``:
  - **drift**: champion rows are cut into windows of ``spec.drift.window`` rows per model version
    and compared with the training reference saved with that version (``reference.json`` in
    ``models:/<m>/<version>``, fetched once per version); see :mod:`pipelines.drift`;
  - **live accuracy**: predictions are kept in a bounded sqlite store, outcomes are joined by
    request id, and the gate's metrics are computed over a rolling window per version and role;
    see :mod:`pipelines.live_accuracy`.
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
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import Field

from feature_specs import SPEC_NAMES, FeatureSpec, InvalidFeature, Validator, load_spec
from pipelines.drift import Windows, score_shift, window_drift
from pipelines.events import EventPublisher
from pipelines.live_accuracy import PredictionStore, RollingAccuracy, breaches, parse_outcome
from pipelines.payload_log import PayloadError, PayloadJoiner
from pipelines.settings import Settings
from pipelines.topics import INFERENCE_LOG, RETRAIN_REQUESTS, ensure_topics, named

log = logging.getLogger("pipelines.monitoring")

DRIFT = Gauge(
    "constructos_feature_drift",
    "Drift of a feature in the last full window: PSI (numbers) or Jensen-Shannon distance (categories).",
    ["model", "version", "feature", "method"],
)
DRIFT_THRESHOLD = Gauge("constructos_drift_threshold", "The spec's drift threshold per method.", ["model", "method"])
DRIFTED = Gauge("constructos_drift_detected", "1 if the last full window drifted, else 0.", ["model", "version"])
WINDOWS = Counter("constructos_drift_windows_total", "Drift windows checked.", ["model", "version", "drifted"])
SCORE_SHIFT = Gauge(
    "constructos_score_psi", "PSI of the last window's scores against the training scores.", ["model", "version"]
)
LIVE = Gauge(
    "constructos_live_metric",
    "Gate metric over the rolling window of labelled rows.",
    ["model", "version", "role", "metric"],
)
LABELS = Gauge("constructos_live_labels", "Labelled rows in the rolling window.", ["model", "version", "role"])
RECORDS = Counter("constructos_monitored_rows_total", "Inference-log rows consumed.", ["model", "version", "role"])
OUTCOMES = Counter(
    "constructos_outcomes_total", "Outcome events by result (joined, unmatched, invalid).", ["model", "result"]
)
RETRAINS = Counter("constructos_retrain_requests_total", "Retrain requests sent by monitoring.", ["model", "kind"])
PAYLOADS = Counter("constructos_payload_events_total", "Payload-logger CloudEvents by result.", ["result"])


class MonitoringSettings(Settings):
    """The monitoring knobs (environment prefix ``CONSTRUCTOS_``), beside the platform settings."""

    monitoring_port: int = 8000
    """HTTP port of ``/events``, ``/metrics`` and ``/healthz``."""
    monitoring_group: str = "constructos-monitoring"
    """Consumer group of the inference-log and outcome consumer."""
    monitoring_models: list[str] = Field(default_factory=list)
    """Models to watch (JSON list in the environment); empty: all."""
    monitoring_cooldown_s: float = Field(default=6 * 3600, ge=0)
    """At most one retrain request per model in this many seconds."""
    monitoring_reference_uri: str = "models:/{model}/{version}"
    """Where the training reference of a served version is read from: an MLflow model URI or a
    local model directory; ``{model}`` and ``{version}`` are filled in."""
    monitoring_accuracy_window: int = Field(default=1000, gt=0)
    """Labelled rows per version and role the live metrics are computed over."""
    monitoring_min_labels: int = Field(default=200, gt=0)
    """Labelled rows needed before a live metric may request a retrain."""
    monitoring_store_rows: int = Field(default=1_000_000, gt=0)
    """Predictions kept for the outcome join (oldest evicted first)."""
    monitoring_window: int | None = Field(default=None, gt=0)
    """Override every spec's ``drift.window`` (rows), e.g. for a demo with little traffic."""

    @property
    def monitoring_dir(self) -> Path:
        return self.data_dir / "monitoring"


# --- the parts -------------------------------------------------------------------------------


class References:
    """Training reference per (model, version), read once; None when the version has none."""

    def __init__(self, uri_template: str, tracking_uri: str) -> None:
        self.uri_template = uri_template
        self.tracking_uri = tracking_uri
        self._cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def get(self, model: str, version: str) -> dict[str, Any] | None:
        key = (model, version)
        if key not in self._cache:
            self._cache[key] = self._fetch(model, version)
        return self._cache[key]

    def _fetch(self, model: str, version: str) -> dict[str, Any] | None:
        from feature_specs.reference import REFERENCE_FILE, read_reference

        uri = self.uri_template.format(model=model, version=version)
        try:
            if not uri.startswith("models:/"):
                return read_reference(Path(uri))
            import mlflow.artifacts

            target = Path(tempfile.mkdtemp(prefix="reference-"))
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{uri}/{REFERENCE_FILE}", dst_path=str(target), tracking_uri=self.tracking_uri
                )
                return dict(json.loads(Path(path).read_text()))
            finally:
                shutil.rmtree(target, ignore_errors=True)
        except Exception as exc:
            log.warning(
                "%s version %s: no training reference at %s (%s); drift is not checked", model, version, uri, exc
            )
            return None


class Cooldown:
    """When each model last had a retrain request, persisted so a restart does not repeat one."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self._last: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def ready(self, model: str, now: float) -> bool:
        return now - self._last.get(model, float("-inf")) >= self.seconds

    def mark(self, model: str, now: float) -> None:
        self._last[model] = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._last))
        tmp.replace(self.path)


Requester = Callable[[str, str, str, dict[str, Any]], None]
"""``(model, kind, reason, details)``: send a retrain request."""


class Monitor:
    """Turns inference-log records and outcome events into gauges and retrain requests (no I/O of its own)."""

    def __init__(
        self,
        settings: MonitoringSettings,
        references: Callable[[str, str], dict[str, Any] | None],
        request_retrain: Requester,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.specs = {m: load_spec(m) for m in settings.monitoring_models or SPEC_NAMES}
        self.references = references
        self.request_retrain = request_retrain
        self.clock = clock
        self.windows = Windows({m: settings.monitoring_window or s.drift.window for m, s in self.specs.items()})
        self.store = PredictionStore(settings.monitoring_dir / "predictions.db", settings.monitoring_store_rows)
        self.accuracy = RollingAccuracy(settings.monitoring_accuracy_window)
        self.cooldown = Cooldown(settings.monitoring_dir / "cooldown.json", settings.monitoring_cooldown_s)
        for model, spec in self.specs.items():
            DRIFT_THRESHOLD.labels(model, "psi").set(spec.drift.psi_threshold)
            DRIFT_THRESHOLD.labels(model, "js").set(spec.drift.js_threshold)

    def close(self) -> None:
        self.store.close()

    # -- inference log ------------------------------------------------------------------------

    def on_record(self, record: Mapping[str, Any]) -> None:
        model = record.get("model")
        if model not in self.specs:
            return
        spec = self.specs[model]
        version, role = str(record.get("model_version") or ""), str(record.get("role") or "champion")
        scores = list((record.get("outputs") or {}).get(spec.outputs[0][0]) or [])
        if not scores:
            return
        RECORDS.labels(model, version, role).inc(len(scores))
        self.store.add(model, str(record["request_id"]), version, role, scores)
        if role != "champion":
            return  # a shadow scores the champion's inputs again: count those rows once
        for window in self.windows.add(model, version, record.get("inputs") or {}, scores):
            self._check_window(spec, version, window)

    def _check_window(self, spec: FeatureSpec, version: str, window: dict[str, list[Any]]) -> None:
        reference = self.references(spec.name, version)
        if reference is None:
            return
        scores = window.pop("__score__")
        result = window_drift(spec, version, reference, window)
        for f in result.features:
            DRIFT.labels(spec.name, version, f.feature, f.method).set(f.value)
        DRIFTED.labels(spec.name, version).set(int(result.drifted))
        WINDOWS.labels(spec.name, version, str(result.drifted).lower()).inc()
        SCORE_SHIFT.labels(spec.name, version).set(score_shift(reference, scores))
        log.info("%s: %s", spec.name, result.reason() if result.drifted else f"no drift in {result.rows} rows")
        if result.drifted:
            details = {"version": version, "features": {f.feature: round(f.value, 4) for f in result.drifted_features}}
            self._retrain(spec.name, "drift", result.reason(), details)

    # -- outcomes -----------------------------------------------------------------------------

    def on_outcomes(self, model: str, values: Iterable[bytes | None]) -> None:
        spec = self.specs[model]
        touched: set[tuple[str, str, str]] = set()
        for raw in values:
            try:
                outcome = parse_outcome(raw or b"", spec)
            except ValueError as exc:
                OUTCOMES.labels(model, "invalid").inc()
                log.debug("%s: outcome refused: %s", model, exc)
                continue
            labelled = self.store.label(outcome)
            OUTCOMES.labels(model, "joined" if labelled else "unmatched").inc()
            touched.update(self.accuracy.add(model, item) for item in labelled)
        for key in sorted(touched):
            self._update_accuracy(spec, key)

    def _update_accuracy(self, spec: FeatureSpec, key: tuple[str, str, str]) -> None:
        _, version, role = key
        metrics, labels = self.accuracy.metrics(spec, key), self.accuracy.labels(key)
        LABELS.labels(spec.name, version, role).set(labels)
        for name, value in metrics.items():
            LIVE.labels(spec.name, version, role, name).set(value)
        problems = breaches(spec, metrics)
        if role == "champion" and problems and labels >= self.settings.monitoring_min_labels:
            reason = f"version {version} over {labels} labelled rows: " + "; ".join(problems)
            self._retrain(spec.name, "accuracy", reason, {"version": version, "metrics": metrics})

    def _retrain(self, model: str, kind: str, reason: str, details: dict[str, Any]) -> None:
        now = self.clock()
        if not self.cooldown.ready(model, now):
            log.info("%s: %s retrain not requested (cool-down): %s", model, kind, reason)
            return
        self.request_retrain(model, kind, reason, details)
        self.cooldown.mark(model, now)
        RETRAINS.labels(model, kind).inc()


# --- Kafka and HTTP --------------------------------------------------------------------------


class RetrainRequests:
    """Sends retrain requests in the trigger's format and reports them as model events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = named(RETRAIN_REQUESTS, settings)
        self.events = EventPublisher(settings)
        self._producer: KafkaProducer | None = None

    def __call__(self, model: str, kind: str, reason: str, details: dict[str, Any]) -> None:
        request_id = f"monitoring-{kind}-{uuid.uuid4().hex[:12]}"
        body = {"model": model, "reason": f"{kind}: {reason}", "request_id": request_id, "source": "monitoring"}
        if self._producer is None:
            self._producer = KafkaProducer(**self.settings.kafka_options(), bootstrap_timeout_ms=10_000)
        self._producer.send(self.topic, key=model.encode(), value=json.dumps(body).encode()).get(timeout=30)
        self.events.emit(
            "drift.detected" if kind == "drift" else "accuracy.degraded",
            model,
            request_id=request_id,
            reason=reason,
            **details,
        )
        log.warning("%s: retrain requested (%s): %s", model, request_id, reason)

    def close(self) -> None:
        self.events.close()
        if self._producer is not None:
            self._producer.close(timeout=5)


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
        from predictors.inference_log import encode

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


def create_app(service: MonitoringService) -> FastAPI:
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
    app = create_app(service)
    uvicorn.run(app, host="0.0.0.0", port=args.port or settings.monitoring_port, log_level="warning")  # until SIGTERM
    service.stop()
    consumer.join(timeout=10)


if __name__ == "__main__":
    main()
