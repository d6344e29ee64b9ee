"""A batch's way through the trigger once polled: to the landing, then settled (rejects
dead-lettered, outcomes counted, retrain requests taken, new rows checked); and a record the Kafka
client cannot decode, dead-lettered and skipped."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CorruptRecordError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from feature_specs import FeatureSpec
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.intake.dead_letters import DeadLetters, PoisonLedger, Where
from pipelines.streaming.intake.undecodable import describe, find_undecodable
from pipelines.streaming.intake.validation import Reject
from pipelines.streaming.landing.batch import CONFLICT, BatchOutcome
from pipelines.streaming.landing.process import Landing
from pipelines.streaming.retraining.retrainer import Retrainer
from pipelines.streaming.trigger.positions import Positions

log = logging.getLogger("pipelines.streaming.trigger")
Batch = dict[TopicPartition, list[ConsumerRecord]]  # one poll's records


class Settler:
    """What the trigger does with its records besides landing them; ``stats`` are the trigger's counters."""

    def __init__(
        self,
        specs: Mapping[str, FeatureSpec],
        topic_model: Mapping[str, str],
        requests_topic: str,
        retrainer: Retrainer,
        retrain: bool,
        state: PoisonLedger,
        events: EventPublisher,
        stats: Counter[str],
        positions: Positions,
        max_bytes: int,
        attempts: int,
    ) -> None:
        self.specs, self.topic_model, self.requests_topic = specs, topic_model, requests_topic
        self.retrainer, self.retrain, self.state, self.events = retrainer, retrain, state, events
        self.stats, self.positions = stats, positions
        self.max_bytes, self.attempts = max_bytes, attempts  # of a dead letter
        self.counted_to: dict[TopicPartition, int] = {}  # per partition: records below are counted
        self.acked: set[Where] = set()  # source records whose dead letter was taken, not yet committed

    def committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Forget the dead letters taken for records below ``offsets``: they are never read again."""
        committed = {(tp.topic, tp.partition): at.offset for tp, at in offsets.items()}
        self.acked = {w for w in self.acked if w[2] >= committed.get(w[:2], -1)}

    def poll(
        self, consumer: KafkaConsumer, producer: KafkaProducer, options: dict[str, Any], timeout_ms: int
    ) -> tuple[Batch, dict[TopicPartition, OffsetAndMetadata]]:
        """``consumer.poll``, or, when it cannot decode a record, nothing and the offset past it."""
        try:
            return consumer.poll(timeout_ms=timeout_ms), {}
        except KafkaError as exc:
            if not isinstance(exc, CorruptRecordError) and not type(exc).__name__.endswith("CodecError"):
                raise
            return {}, self.skip_undecodable(consumer, producer, options, exc)
        except OSError:
            raise
        except Exception as exc:  # a codec library's own error, raised through poll
            return {}, self.skip_undecodable(consumer, producer, options, exc)

    def skip_undecodable(
        self, consumer: KafkaConsumer, producer: KafkaProducer, options: dict[str, Any], exc: Exception
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Find the record ``poll`` could not decode, dead-letter it, seek past it; returns the offset
        to commit once the batch at hand has settled (every record before it is in that batch or
        earlier). Not found: ``exc`` again (the session reconnects, with backoff)."""
        positions = {}
        for tp in consumer.assignment():
            end, at = consumer.highwater(tp), consumer.position(tp, timeout_ms=5000)
            if at is not None and (end is None or end > at):
                positions[tp] = at
        found = find_undecodable(options, positions)
        if found is None:
            log.warning("poll failed (%s) and no undecodable record was found: reconnecting", describe(exc))
            raise exc
        tp, offset = found.partition, found.offset
        self.positions.settled_to.setdefault(tp, offset)
        where = f"{tp.topic}/{tp.partition}/{offset}"
        self.stats["undecodable"] += 1
        if tp.topic == self.requests_topic:
            log.error("undecodable retrain request at %s skipped: %s", where, found.error)
            self.events.emit("retrain.rejected", "", reason=f"undecodable: {found.error}", offset=offset)
        else:
            log.error("undecodable record at %s dead-lettered and skipped: %s", where, found.error)
            letters = self.letters(producer)
            letters.undecodable(
                tp.topic, tp.partition, offset, found.error, found.raw, self.specs[self.topic_model[tp.topic]]
            )
            letters.flush()
        consumer.seek(tp, offset + 1)
        return {tp: OffsetAndMetadata(offset + 1, "", -1)}

    def letters(self, producer: KafkaProducer) -> DeadLetters:
        return DeadLetters(
            producer,
            self.state,
            self.stats,
            self.max_bytes,
            self.attempts,
            self.acked,
        )

    def submit(self, landing: Landing, batch: Batch) -> None:
        """Hand the models' records of ``batch`` to ``landing`` (retrain requests stay here)."""
        values: dict[str, list[bytes | None]] = {}
        for tp, records in batch.items():
            if tp.topic != self.requests_topic:
                values.setdefault(self.topic_model[tp.topic], []).extend(r.value for r in records)
        landing.submit(values)

    def settle(self, batch: Batch, outcomes: dict[str, BatchOutcome], producer: KafkaProducer) -> None:
        """Dead-letter the rejects of a landed batch and act on it; durable when it returns."""
        by_model: dict[str, list[ConsumerRecord]] = {}
        requests: list[ConsumerRecord] = []
        for tp, records in batch.items():
            if tp.topic == self.requests_topic:
                requests += records
            else:
                by_model.setdefault(self.topic_model[tp.topic], []).extend(records)
        letters = self.letters(producer)
        for model, records in by_model.items():
            for reject in self.count(model, records, outcomes[model]):
                letters.send(records[reject.index], reject, self.specs[model])
        for tp, records in batch.items():
            if records and tp.topic != self.requests_topic:
                self.counted_to[tp] = max(self.counted_to.get(tp, 0), records[-1].offset + 1)
        letters.flush()
        for record in requests:
            self.retrainer.request(record)
        for model in by_model if self.retrain else ():
            self.retrainer.check_new_rows(model)

    def count(self, model: str, records: list[ConsumerRecord], outcome: BatchOutcome) -> list[Reject]:
        """Count one model's landing outcome, each source record once (a batch read again after a
        failure counts only records not counted before); returns its rejects (conflicts included)."""
        new = [r.offset >= self.counted_to.get(TopicPartition(r.topic, r.partition), 0) for r in records]
        landed, refused = set(outcome.landed_at), {r.index for r in outcome.rejects}
        self.stats.update(
            landed=sum(new[i] for i in landed),
            duplicates=sum(new[i] for i in range(len(records)) if i not in landed and i not in refused),
            conflicts=sum(new[r.index] for r in outcome.rejects if r.reason == CONFLICT),
            rejected=sum(new[i] for i in refused),
        )
        if outcome.rejects:
            reasons = Counter(r.field for r in outcome.rejects)
            log.info("%s: rejected %d to the DLQ (by field: %s)", model, len(outcome.rejects), dict(reasons))
        skipped = outcome.duplicates + outcome.conflicts
        log.debug("%s: landed %d, skipped %d already landed", model, outcome.landed, skipped)
        return outcome.rejects


def next_offsets(batch: Batch, assigned: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Where the group resumes after ``batch``, for the partitions still assigned (a revoked one is
    replayed by its new owner from its last commit: its events are landed, so nothing is lost)."""
    return {
        tp: OffsetAndMetadata(records[-1].offset + 1, "", records[-1].leader_epoch)
        for tp, records in batch.items()
        if records and tp in assigned
    }
