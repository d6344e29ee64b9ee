"""The Kafka trigger: lands the models' events and launches retraining (``python -m pipelines.streaming.trigger``).

**Intake.** A consumer group reads each model's ``source_topic``. Every event is checked against
the model's feature spec (policy in :mod:`pipelines.streaming.intake`): PII fields named in the spec are
stripped; a field the spec does not know is refused, like malformed JSON, a wrong type, a value out
of range or an oversized message. Refused events go to ``<source_topic>.dlq`` with the PII fields
removed and the reason in headers (:mod:`pipelines.streaming.dead_letters`); the consumer goes on.

**Exactly once.** Good events are landed (:mod:`pipelines.streaming.land_batch`, into a folder or
an ``s3://`` store) through the shared landing index: an event id lands once across replicas,
rebalances and crashes, and memory does not grow with the store. A duplicate is counted and
skipped; a conflict (same id, other content) is dead-lettered as ``conflicting-duplicate``. Dead
letters are flushed, and only then are the batch's offsets committed. (Publish with the event id as
key so a re-sent event lands on the same partition.) Landing runs in a child process while the
next batch is polled (:mod:`pipelines.streaming.landing_process`).

**Retraining.** :mod:`pipelines.streaming.retraining`: on new rows or on request, once per key.

**Resilience.** A Kafka failure (broker down at start or gone mid-stream, a failed commit) or an
unreachable landing store (landing pauses: one warning per outage) closes the clients and starts
again from the committed offsets after a pause doubling up to ``kafka_retry_max_s``. A record that
cannot even be dead-lettered is skipped after ``trigger_dead_letter_attempts`` tries (a poison
record: ERROR log, kept in the state). SIGTERM/SIGINT finish the batch at hand and stop.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from feature_specs import load_spec, load_specs
from pipelines.settings import Settings, get_settings
from pipelines.storage import StoreUnavailable
from pipelines.streaming import health, landing, landing_process
from pipelines.streaming.assignment import AssignmentWatch
from pipelines.streaming.dead_letters import DeadLetters
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.health import Heartbeat
from pipelines.streaming.intake import Reject
from pipelines.streaming.land_batch import Outcome
from pipelines.streaming.landing_index import LandingIndex
from pipelines.streaming.landing_process import Landing, LandingProcessDied
from pipelines.streaming.log_index import open_index
from pipelines.streaming.logs import configure_logging
from pipelines.streaming.outage import Outage, backoff
from pipelines.streaming.retrain_state import RetrainState
from pipelines.streaming.retraining import Launcher, Retrainer
from pipelines.streaming.topics import RETRAIN_REQUESTS, ensure_topics, named

log = logging.getLogger("pipelines.streaming.trigger")
Batch = dict[TopicPartition, list[ConsumerRecord]]  # one poll's records


def launch_training(model: str, *, key: str, **params: Any) -> str:
    """The default launcher: the training pipeline (imported only when a run is due)."""
    from pipelines.streaming.launch import launch_training as launch

    return launch(model, key=key, **params)


class _Recover(ConsumerRebalanceListener):
    """On every assignment: finish interrupted landings and resume interrupted launches."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.trigger.recover()


class Trigger:
    """The consumer loop of the module docstring; ``launcher`` is called as
    ``launcher(model, key=trigger_key)`` and returns a run id (injectable for tests and backfills)."""

    def __init__(
        self,
        settings: Settings | None = None,
        models: Sequence[str] | None = None,
        launcher: Launcher = launch_training,
        retrain: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        self.models = list(models or self.settings.trigger_models or load_specs())
        self.retrain = retrain
        self.specs = {m: load_spec(m) for m in self.models}
        self.topic_model = {named(spec.source_topic, self.settings): m for m, spec in self.specs.items()}
        self.requests_topic = named(RETRAIN_REQUESTS, self.settings)
        self.store = self.settings.landing_store
        self.index: LandingIndex = open_index(self.settings)  # recovery and row counts; landing has its own
        self.state = RetrainState(self.settings.ledger_store)
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._events = EventPublisher(self.settings)
        self.retrainer = Retrainer(
            self.specs, self.index, self.state, self._events, launcher, lambda m: landing.row_count(self.store, m)
        )
        self._connected = False
        self._outage = Outage(self.settings.kafka_retry_max_s)
        self._recovery_due = False
        self._landing: Landing | None = None
        self._landing_deaths = 0  # in a row, without a batch landed between them
        self.heartbeat = Heartbeat()  # the health port's liveness signal

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, exit_when_idle_s: float | None = None) -> None:
        """Consume until stopped (or idle that long); reconnects with backoff on Kafka or store failures."""
        # What is loaded lives as long as the trigger: kept out of the collector's full passes, which
        # otherwise walk every module's objects while a batch's events are alive (~15% of the time).
        gc.collect()
        gc.freeze()
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    self._landing = self._landing or landing_process.start(self.settings, self.models)
                    self._session(self._landing, exit_when_idle_s)
                    break
                except KafkaError as exc:
                    attempt = 1 if self._connected else attempt + 1
                    delay = backoff(attempt, self.settings.kafka_retry_max_s)
                    log.warning(
                        "Kafka at %s failed (%s: %s); retrying in %.0fs (attempt %d)",
                        self.settings.kafka_bootstrap,
                        type(exc).__name__,
                        exc,
                        delay,
                        attempt,
                    )
                    self.heartbeat.beat()
                    self._stop.wait(delay)
                except StoreUnavailable as exc:
                    self.heartbeat.beat()
                    self.stats["store_retries"] += 1
                    self._stop.wait(self._outage.failed(exc))
                except LandingProcessDied as exc:  # a new one lands the batch again, from the committed offsets
                    self.stats["landing_restarts"] += 1
                    self._landing_deaths += 1  # back to 0 once a batch lands: a child that cannot start backs off
                    delay = backoff(self._landing_deaths, self.settings.kafka_retry_max_s)
                    log.error("%s; starting another in %.0fs (attempt %d)", exc, delay, self._landing_deaths)
                    self._landing = None
                    self._stop.wait(delay)
        finally:
            if self._landing is not None:
                self._landing.close()
                self._landing = None
            self.retrainer.close()
            self._events.close()
            log.info("stopped: %s", dict(self.stats))

    def recover(self) -> None:
        """Publish landed parts a crash left unpublished; resume launches a crash left pending.
        With the store unreachable, publishing waits for the next batch (which waits for the store)."""
        try:
            self._recover_landing()
        except StoreUnavailable as exc:
            self._recovery_due = True
            log.warning("publishing staged parts postponed: %s", exc)
        if self.retrain:
            self.retrainer.resume_pending()

    def _recover_landing(self) -> None:
        for model in self.models:
            if published := landing.recover(self.store, self.index, model):
                log.warning("%s: published %d part(s) a crash had left staged", model, published)
        self._recovery_due = False

    def _session(self, landing: Landing, exit_when_idle_s: float | None) -> None:
        """One connection to the cluster, from the committed offsets until stopped or a Kafka error.

        Pipelined: batch N+1 is polled while ``landing`` lands batch N; N is then settled (dead
        letters flushed, retraining checked) and its offsets committed while N+1 lands."""
        self._connected = False
        ensure_topics(self.settings, self.models, timeout_ms=5000)
        # reconnect to a broker that went away no slower than we retry one that never answered
        options = self.settings.kafka_options() | {
            "reconnect_backoff_max_ms": int(self.settings.kafka_retry_max_s * 1000)
        }
        producer = KafkaProducer(  # dead letters only: at least once; not idempotent, so a refused
            **options,  # record fails its own batch, not the producer
            linger_ms=5,
            compression_type="gzip",
            enable_idempotence=False,
            metrics_enabled=False,
            bootstrap_timeout_ms=5000,
        )
        try:
            consumer = KafkaConsumer(
                **options,
                group_id=self.settings.trigger_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.settings.trigger_max_poll_records,
                session_timeout_ms=10_000,  # a killed replica's partitions move on after 10 s, not 45
                max_partition_fetch_bytes=8 << 20,
                metrics_enabled=False,
                check_crcs=True,  # in C with the crc32c package
                bootstrap_timeout_ms=5000,
            )
        except KafkaError:
            producer.close(timeout=1)
            raise
        try:
            consumer.subscribe(
                [*self.topic_model, *([self.requests_topic] if self.retrain else [])], listener=_Recover(self)
            )
            self._connected = True
            topics = ", ".join(sorted(consumer.subscription()))
            log.info("consuming %s as group %s", topics, self.settings.trigger_group)
            idle_since = reported = time.monotonic()
            watch = AssignmentWatch(options, self.settings.trigger_group)
            last = dict(self.stats)
            landing_now: Batch | None = None  # submitted to ``landing``, not yet committed
            try:
                while not self._stop.is_set() or landing_now is not None:  # stopping: settle the batch at hand
                    if time.monotonic() - reported > 60 and dict(self.stats) != last:
                        last, reported = dict(self.stats), time.monotonic()
                        log.info("so far: %s", last)
                    self.heartbeat.beat()
                    batch = {} if self._stop.is_set() else consumer.poll(timeout_ms=20 if landing_now else 500)
                    watch.check(consumer)
                    landed: Batch | None = None
                    if landing_now is not None:
                        landed, landing_now = landing_now, None
                        outcomes = landing.result()
                    if batch:
                        if self._recovery_due:
                            self._recover_landing()
                        self._submit(landing, batch)
                        landing_now = batch
                    if landed is not None:
                        self._settle(landed, outcomes, producer)
                        consumer.commit(_next_offsets(landed, consumer.assignment()), timeout_ms=30_000)
                        self.stats["batches"] += 1
                        self._landing_deaths = 0
                        self._outage.over()
                    if batch or landed or not consumer.assignment():  # busy, or still joining: not idle
                        idle_since = time.monotonic()
                    elif exit_when_idle_s is not None and time.monotonic() - idle_since > exit_when_idle_s:
                        return
            finally:
                if landing_now is not None:  # its outcome is not needed: the batch is replayed
                    with contextlib.suppress(Exception):
                        landing.result()
        finally:
            consumer.close(autocommit=False, timeout_ms=5000)
            producer.close(timeout=5)

    # -- one batch ----------------------------------------------------------------------

    def _submit(self, landing: Landing, batch: Batch) -> None:
        """Hand the models' records of ``batch`` to ``landing`` (retrain requests stay here)."""
        values: dict[str, list[bytes | None]] = {}
        for tp, records in batch.items():
            if tp.topic != self.requests_topic:
                values.setdefault(self.topic_model[tp.topic], []).extend(r.value for r in records)
        landing.submit(values)

    def _settle(self, batch: Batch, outcomes: dict[str, Outcome], producer: KafkaProducer) -> None:
        """Dead-letter the rejects of a landed batch and act on it; durable when it returns."""
        by_model: dict[str, list[ConsumerRecord]] = {}
        requests: list[ConsumerRecord] = []
        for tp, records in batch.items():
            if tp.topic == self.requests_topic:
                requests += records
            else:
                by_model.setdefault(self.topic_model[tp.topic], []).extend(records)
        letters = DeadLetters(
            producer,
            self.state,
            self.stats,
            self.settings.trigger_dead_letter_max_bytes,
            self.settings.trigger_dead_letter_attempts,
        )
        for model, records in by_model.items():
            pii = self.specs[model].pii_names
            for reject in self._count(model, outcomes[model]):
                letters.send(records[reject.index], reject, pii)
        letters.flush()
        for record in requests:
            self.retrainer.request(record)
        for model in by_model if self.retrain else ():
            self.retrainer.check_new_rows(model)

    def _count(self, model: str, outcome: Outcome) -> list[Reject]:
        """Count one model's landing outcome; returns its rejects (conflicts included)."""
        self.stats.update(
            landed=outcome.landed,
            duplicates=outcome.duplicates,
            conflicts=outcome.conflicts,
            rejected=len(outcome.rejects),
        )
        if outcome.rejects:
            reasons = Counter(r.field for r in outcome.rejects)
            log.info("%s: rejected %d to the DLQ (by field: %s)", model, len(outcome.rejects), dict(reasons))
        skipped = outcome.duplicates + outcome.conflicts
        log.debug("%s: landed %d, skipped %d already landed", model, outcome.landed, skipped)
        return outcome.rejects

    def rows(self, model: str) -> int:
        return self.index.rows(model)


def _next_offsets(batch: Batch, assigned: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Where the group resumes after ``batch``, for the partitions still assigned (a revoked one is
    replayed by its new owner from its last commit: its events are landed, so nothing is lost)."""
    return {
        tp: OffsetAndMetadata(records[-1].offset + 1, "", records[-1].leader_epoch)
        for tp, records in batch.items()
        if records and tp in assigned
    }


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.streaming.trigger", description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated models (default: all, or CONSTRUCTOS_TRIGGER_MODELS)")
    parser.add_argument("--no-retrain", action="store_true", help="only land events (backfills): never launch")
    parser.add_argument("--exit-when-idle", type=float, metavar="S", help="stop after S seconds without records")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--kafka-log-level",
        default="ERROR",
        choices=["INFO", "WARNING", "ERROR"],
        help="the Kafka client's own log (never DEBUG: it prints raw records)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    configure_logging(args.log_level, args.kafka_log_level)
    trigger = Trigger(models=args.models.split(",") if args.models else None, retrain=not args.no_retrain)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trigger.stop())
    settings = trigger.settings
    if settings.trigger_metrics_port:  # silent longer than a batch or a reconnect pause could last: hung
        silence = max(120.0, 2 * settings.kafka_retry_max_s)
        health.serve(settings.trigger_metrics_port, trigger.stats, trigger.heartbeat, silence)
    trigger.run(exit_when_idle_s=args.exit_when_idle)


if __name__ == "__main__":
    main()
