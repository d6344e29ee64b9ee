"""Dead letters: a refused record's copy on ``<topic>.dlq``, and what happens when even that fails.

**The copy.** Personal data never leaves in any position. A value that is a JSON object keeps the
fields the spec declares (envelope, features, target) so it can be repaired and replayed; the
spec's PII fields are removed (``pii.removed`` names them; the decoder has resolved every escape,
so ``"customer\u005fname"`` is ``customer_name``) and so are fields the spec does not know (their
names may be personal values: ``unknown.removed`` lists 12-hex SHA-256 digests of the names, never
the names). A value that is *not* a JSON object cannot be scrubbed reliably (a field name can be
spelled with any escapes, a record cut anywhere), so it is dropped: an empty value with
``value.dropped``, ``value.size`` and ``value.sha256``. The record's key is kept only when it is
the event's own id; any other key becomes its SHA-256 (``key.sha256``). The source record's headers
are not copied. Headers ``error.field``, ``error.reason`` (which name fields of the spec or a fixed
label, never a value), ``source.topic``, ``source.partition``, ``source.offset``. A copy larger than
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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from feature_specs import FeatureSpec, InvalidFeature
from pipelines.streaming.intake.undecodable import RawRecord
from pipelines.streaming.intake.validation import ENVELOPE, Reject, decode_object, name_digest
from pipelines.streaming.topics import dlq

log = logging.getLogger(__name__)


class PoisonLedger(Protocol):
    """Where failed dead-letter attempts are counted and poison records kept, shared by the replicas
    (:class:`~pipelines.streaming.retraining.state.RetrainState`)."""

    def failed_attempt(self, topic: str, partition: int, offset: int) -> int: ...
    def poisoned(self, topic: str, partition: int, offset: int, error: str) -> None: ...


class DeadLetterFailed(KafkaError):
    """Some dead letters of the batch were not accepted: retry the batch."""

    retriable = True


Headers = list[tuple[str, bytes]]


def scrub(value: bytes, spec: FeatureSpec) -> tuple[bytes, Headers]:
    """The dead-letter copy of ``value`` (see the module docstring) and the headers saying what was
    taken out."""
    try:
        event = decode_object(value, strict=False)  # duplicate keys: refused by the intake, copied here
    except InvalidFeature:
        return b"", [
            ("value.dropped", b"not a JSON object: personal data could hide in it in any spelling"),
            ("value.size", str(len(value)).encode()),
            ("value.sha256", _sha256(value)),
        ]
    declared = {*ENVELOPE, *spec.feature_names, spec.target.name}
    pii = sorted(name for name in event if name in spec.pii_names)
    unknown = sorted(name_digest(name) for name in event if name not in declared and name not in spec.pii_names)
    headers: Headers = []
    if pii:
        headers.append(("pii.removed", ",".join(pii).encode()))
    if unknown:
        headers.append(("unknown.removed", ",".join(unknown).encode()))
    if not headers:
        return value, []
    kept = {k: v for k, v in event.items() if k in declared}
    return json.dumps(kept, ensure_ascii=False).encode("utf-8", "backslashreplace"), headers


def _header(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


#: what a copy may keep of its value, tried in turn while the broker refuses it as too large: the
#: configured maximum, 1 KiB, nothing (the reason and the source's coordinates always stay).
SHRINK = (None, 1024, 0)
Where = tuple[str, int, int]  # source topic, partition, offset


@dataclass
class _Letter:
    record: ConsumerRecord
    reject: Reject
    spec: FeatureSpec | None
    extra: Headers = field(default_factory=list)
    future: Any = None
    level: int = 0  # index into SHRINK

    @property
    def where(self) -> Where:
        return self.record.topic, self.record.partition, self.record.offset


class DeadLetters:
    """One batch's dead letters: :meth:`send` each, then :meth:`flush` once.

    ``acked`` (kept by the caller across batches) holds the source records whose copy the broker
    has taken: a batch read again after a failure does not send them twice."""

    def __init__(
        self,
        producer: KafkaProducer,
        state: PoisonLedger,
        stats: Counter[str],
        max_bytes: int,
        attempts: int,
        acked: set[Where] | None = None,
    ) -> None:
        self.producer, self.state, self.stats = producer, state, stats
        self.max_bytes, self.attempts = max_bytes, attempts
        self.acked: set[Where] = acked if acked is not None else set()
        self._sent: list[_Letter] = []

    def undecodable(
        self, topic: str, partition: int, offset: int, error: str, raw: RawRecord | None, spec: FeatureSpec
    ) -> None:
        """A dead letter for a record the client could not decode, the error in ``error.reason``:
        its key and value as read from the raw batch (``value.recovered``; scrubbed like any
        copy), or an empty value when they could not be read."""
        reject = Reject(-1, "record", f"undecodable by the Kafka client: {error}")
        if raw is None:
            record = ConsumerRecord(topic, partition, -1, offset, -1, -1, None, b"", [], None, -1, -1, -1)
            self.send(record, reject, None)
            return
        value = raw.value if raw.value is not None else b""
        record = ConsumerRecord(topic, partition, -1, offset, -1, -1, raw.key, value, [], None, -1, -1, -1)
        self.send(record, reject, spec, [("value.recovered", b"read from the raw record batch")])

    def send(
        self, record: ConsumerRecord, reject: Reject, spec: FeatureSpec | None, extra: Headers | None = None
    ) -> None:
        letter = _Letter(record, reject, spec, extra or [])
        if letter.where in self.acked:
            return  # its batch is read again: the copy is on the DLQ already
        letter.future = self._send(letter)
        self._sent.append(letter)

    def flush(self) -> None:
        """Wait for every copy; skip poison records; raise :class:`DeadLetterFailed` to retry the batch.

        The broker refuses a whole produce batch for one bad record, so a copy refused for good is
        sent again alone; one refused as too large is cut further (:data:`SHRINK`, said in its
        headers) before it counts as a failure of its own. A copy taken is never sent again."""
        self.producer.flush(timeout=30)
        sent, self._sent = self._sent, []
        retry = None
        for letter in sent:
            error = _error(letter.future)
            if error is not None and not getattr(error, "retriable", False):
                error = self._again(letter)
                while error is not None and _too_large(error) and letter.level < len(SHRINK) - 1:
                    letter.level += 1
                    error = self._again(letter)
            if error is None:
                self.acked.add(letter.where)
                continue
            if getattr(error, "retriable", False):
                retry = error
                continue
            record = letter.record
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

    def _again(self, letter: _Letter) -> KafkaError | None:
        letter.future = self._send(letter)
        self.producer.flush(timeout=30)
        return _error(letter.future)

    def _send(self, letter: _Letter) -> Any:
        record, reject = letter.record, letter.reject
        value, extra = (record.value, []) if letter.spec is None else scrub(record.value or b"", letter.spec)
        headers = [
            ("error.field", _header(reject.field)),
            ("error.reason", _header(reject.reason)),
            ("source.topic", _header(record.topic)),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            *extra,
            *letter.extra,
        ]
        key = record.key
        if key is not None and key != _event_id(value):  # any other key may be personal (or huge)
            headers.append(("key.sha256", _sha256(key)))
            key = _sha256(key)
        budget = SHRINK[letter.level]
        limit = self.max_bytes if budget is None else min(budget, self.max_bytes)
        if value is not None and len(value) > limit:
            if not any(name == "value.sha256" for name, _ in headers):
                headers.append(("value.sha256", _sha256(value)))
            headers.append(("value.truncated", str(len(value)).encode()))
            value = value[:limit]
        try:
            return self.producer.send(dlq(record.topic), key=key, value=value, headers=headers)
        except KafkaError as exc:  # refused before sending (e.g. larger than the producer allows)
            return exc


def _event_id(value: bytes | None) -> bytes | None:
    """The event id of a copy that is a JSON object, as bytes (None otherwise)."""
    if not value or not value.startswith(b"{"):
        return None
    try:
        event_id = decode_object(value, strict=False).get("event_id")
    except InvalidFeature:
        return None
    return event_id.encode("utf-8", "backslashreplace") if isinstance(event_id, str) else None


def _too_large(error: KafkaError) -> bool:
    return type(error).__name__ in ("MessageSizeTooLargeError", "RecordListTooLargeError")


def _error(future: Any) -> KafkaError | None:
    if isinstance(future, KafkaError):
        return future
    return future.exception if future.failed() else None


def _sha256(value: bytes) -> bytes:
    return hashlib.sha256(value).hexdigest().encode()
