"""Dead letters: a refused record's copy on ``<topic>.dlq``, and what happens when even that fails.

**The copy.** The record's value with the spec's PII fields removed (the rest is kept so it can be
repaired and replayed), its key, and headers ``error.field``, ``error.reason``, ``source.topic``,
``source.partition``, ``source.offset`` (plus ``pii.removed`` naming the fields taken out). A value
that is not a JSON object has its PII fields blanked by pattern. A copy larger than
``trigger_dead_letter_max_bytes`` keeps its first bytes only, with ``value.truncated`` (the
original size) and ``value.sha256``: the full record stays findable at its source offset.
Copies are gzip-compressed.

**Poison records.** A copy the broker refuses for good (a non-retriable error, e.g. a topic whose
size limit is too small) is retried with the whole batch; after ``trigger_dead_letter_attempts``
failures, counted in the trigger's state so a restart does not reset them, the record is skipped:
an ERROR log and its topic/partition/offset kept in the state. A retriable failure (the broker is
away) is retried without limit: those records are not poison, the cluster is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Collection
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from feature_specs import InvalidFeature
from pipelines.streaming.intake import Reject, decode_object
from pipelines.streaming.retrain_state import RetrainState
from pipelines.streaming.topics import dlq

log = logging.getLogger(__name__)


class DeadLetterFailed(KafkaError):
    """Some dead letters of the batch were not accepted: retry the batch."""

    retriable = True


def scrub(value: bytes, pii: Collection[str]) -> tuple[bytes, list[str]]:
    """``value`` without the PII fields, and the names removed."""
    try:
        event = decode_object(value)
    except InvalidFeature:
        return _blank(value, pii)
    removed = sorted(name for name in pii if name in event)
    if not removed:
        return value, []
    return json.dumps({k: v for k, v in event.items() if k not in pii}).encode(), removed


def _blank(value: bytes, pii: Collection[str]) -> tuple[bytes, list[str]]:
    """Best effort for what is not a JSON object: ``"<pii>": <anything>`` becomes ``"<pii>": null``."""
    removed = []
    for name in pii:
        pattern = re.compile(rb'("' + re.escape(name.encode()) + rb'"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]]*)')
        value, n = pattern.subn(rb"\1null", value)
        removed += [name] * bool(n)
    return value, sorted(removed)


def _header(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


class DeadLetters:
    """One batch's dead letters: :meth:`send` each, then :meth:`flush` once."""

    def __init__(
        self, producer: KafkaProducer, state: RetrainState, stats: Counter[str], max_bytes: int, attempts: int
    ) -> None:
        self.producer, self.state, self.stats = producer, state, stats
        self.max_bytes, self.attempts = max_bytes, attempts
        self._sent: list[tuple[ConsumerRecord, Reject, Collection[str], Any]] = []

    def send(self, record: ConsumerRecord, reject: Reject, pii: Collection[str]) -> None:
        self._sent.append((record, reject, pii, self._send(record, reject, pii)))

    def flush(self) -> None:
        """Wait for every copy; skip poison records; raise :class:`DeadLetterFailed` to retry the batch.

        The broker refuses a whole produce batch for one bad record, so a copy refused for good is
        sent again alone before it counts as a failure of its own."""
        self.producer.flush(timeout=30)
        sent, self._sent = self._sent, []
        retry = None
        for record, reject, pii, future in sent:
            error = _error(future)
            if error is not None and not getattr(error, "retriable", False):
                alone = self._send(record, reject, pii)
                self.producer.flush(timeout=30)
                error = _error(alone)
            if error is None:
                continue
            if getattr(error, "retriable", False):
                retry = error
                continue
            failures = self.state.failed_attempt(record.topic, record.partition, record.offset)
            where = f"{record.topic}/{record.partition}/{record.offset}"
            text = f"{type(error).__name__}: {error}"[:500]
            if failures < self.attempts:
                log.warning("dead letter of %s refused (%s), try %d of %d", where, text, failures, self.attempts)
                retry = retry or error
                continue
            self.state.poisoned(record.topic, record.partition, record.offset, text)
            self.stats["poison"] += 1
            log.error("poison record %s skipped: its dead letter was refused %d times (%s)", where, failures, text)
        if retry is not None:
            raise DeadLetterFailed(f"dead letters not accepted: {type(retry).__name__}: {retry}")

    def _send(self, record: ConsumerRecord, reject: Reject, pii: Collection[str]) -> Any:
        value, removed = scrub(record.value, pii) if record.value is not None else (None, [])
        headers = [
            ("error.field", _header(reject.field)),
            ("error.reason", _header(reject.reason)),
            ("source.topic", _header(record.topic)),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        if removed:
            headers.append(("pii.removed", ",".join(removed).encode()))
        if value is not None and len(value) > self.max_bytes:
            headers += [("value.truncated", str(len(value)).encode()), ("value.sha256", _sha256(value))]
            value = value[: self.max_bytes]
        try:
            return self.producer.send(dlq(record.topic), key=record.key, value=value, headers=headers)
        except KafkaError as exc:  # refused before sending (e.g. larger than the producer allows)
            return exc


def _error(future: Any) -> KafkaError | None:
    if isinstance(future, KafkaError):
        return future
    return future.exception if future.failed() else None


def _sha256(value: bytes) -> bytes:
    return hashlib.sha256(value).hexdigest().encode()
