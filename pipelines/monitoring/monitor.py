"""The monitor: drift windows, live accuracy and retrain requests per model, and their Prometheus metrics."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from prometheus_client import Counter, Gauge
from pydantic import Field

from feature_specs import FeatureSpec, load_spec, load_specs
from pipelines.monitoring.drift import Windows, score_shift, window_drift
from pipelines.monitoring.live_accuracy import PredictionStore, RollingAccuracy, breaches, parse_outcome
from pipelines.settings import Settings
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.topics import RETRAIN_REQUESTS, named

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
        self.specs = {m: load_spec(m) for m in settings.monitoring_models or load_specs()}
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
