"""The inference log: every scored request, published to Kafka from a background thread.

``publish`` only puts the record on a bounded in-memory queue (microseconds, never blocks);
a daemon thread serialises and sends. While the broker is away the producer is retried with
backoff; records beyond the queue are dropped and counted (``constructos_inference_log_dropped_total``)
— serving never waits for, or fails because of, the log.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np
import orjson

from platform_settings.kafka import KafkaSettings
from predictors.observability.metrics import INFERENCE_LOG_DROPPED

logger = logging.getLogger(__name__)
_STOP: dict[str, Any] = {}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [None if isinstance(v, float) and v != v else v for v in value.tolist()]
    return value


def encode(record: dict[str, Any]) -> bytes:
    """JSON for one record: arrays become lists, NaN (value left to the model's imputer) null."""
    plain = {
        k: ({n: _plain(v) for n, v in value.items()} if isinstance(value, dict) else value)
        for k, value in record.items()
    }
    return orjson.dumps(plain)


class InferenceLog:
    def __init__(self, settings: KafkaSettings, topic: str, maxsize: int = 10_000) -> None:
        self.topic = settings.topic(topic)
        self._options = settings.kafka_options()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def publish(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            INFERENCE_LOG_DROPPED.labels(record.get("model", "")).inc()

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        delay = 1.0
        while True:
            try:
                return KafkaProducer(**self._options, acks=1, linger_ms=20, max_block_ms=2000)
            except Exception as exc:
                logger.warning("inference log: Kafka unreachable (%s); retrying in %.0fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _run(self) -> None:
        producer = None
        while True:
            record = self._queue.get()
            if record is _STOP:
                break
            if producer is None:
                producer = self._connect()
            try:
                key = str(record.get("request_id", "")).encode()
                producer.send(self.topic, key=key, value=encode(record)).add_errback(self._dropped, record)
            except Exception as exc:  # buffer full while the broker is away: drop, count, go on
                self._dropped(record, exc)
        if producer is not None:
            producer.flush(timeout=5)
            producer.close(timeout=5)

    @staticmethod
    def _dropped(record: dict[str, Any], exc: BaseException) -> None:
        INFERENCE_LOG_DROPPED.labels(record.get("model", "")).inc()
        logger.debug("inference log: record dropped: %s", exc)
