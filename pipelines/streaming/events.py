"""Model lifecycle events on ``mlops.model-events``: what happened to which model, as JSON.

Every event is ``{"event_id", "type", "model", "occurred_at", ...details}``, keyed by the model
name (so one model's events stay in order). Types used so far: ``retrain.triggered``,
``retrain.skipped``, ``retrain.rejected``, ``training.launched``, ``training.failed``; other
steps add their own (e.g. ``model.registered``, ``model.promoted``, ``rollout.started``).

Publishing is best effort: a lifecycle event must never fail the work it reports, so an
unreachable broker is logged and the event dropped::

    from pipelines.streaming.events import emit
    emit("model.promoted", "credit_risk", version="7", run_id=run_id)
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from pipelines.settings import Settings, get_settings
from pipelines.streaming.topics import MODEL_EVENTS, named

log = logging.getLogger(__name__)


def model_event(type: str, model: str, **details: Any) -> dict[str, Any]:
    """An event envelope with a fresh id and the current UTC time."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": type,
        "model": model,
        "occurred_at": datetime.now(UTC).isoformat(),
        **details,
    }


class EventPublisher:
    """Sends lifecycle events with a producer of its own, or one it is given (not closed by it)."""

    def __init__(self, settings: Settings | None = None, producer: KafkaProducer | None = None) -> None:
        self.settings = settings or get_settings()
        self.topic = named(MODEL_EVENTS, self.settings)
        self._producer = producer
        self._owned = producer is None
        self._lock = threading.Lock()

    def emit(self, type: str, model: str, **details: Any) -> dict[str, Any]:
        """Publish one event (asynchronously); returns it, sent or not."""
        event = model_event(type, model, **details)
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = KafkaProducer(
                        **self.settings.kafka_options(), max_block_ms=5000, bootstrap_timeout_ms=5000
                    )
            self._producer.send(self.topic, key=model.encode(), value=json.dumps(event, default=str).encode())
        except KafkaError as exc:
            log.warning("lifecycle event %s of %s not published: %s", type, model, exc)
        return event

    def flush(self, timeout_s: float = 10.0) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout_s)
            except KafkaError as exc:
                log.warning("lifecycle events not flushed: %s", exc)

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        if self._producer is not None and self._owned:
            self._producer.close(timeout=min(5.0, timeout_s))
        self._producer = None


_default: EventPublisher | None = None
_lock = threading.Lock()


def emit(type: str, model: str, **details: Any) -> dict[str, Any]:
    """Publish a lifecycle event with the process-wide publisher (created on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = EventPublisher()
    return _default.emit(type, model, **details)


def flush(timeout_s: float = 10.0) -> None:
    """Wait until the events emitted so far are sent (call before a short-lived process exits)."""
    if _default is not None:
        _default.flush(timeout_s)
