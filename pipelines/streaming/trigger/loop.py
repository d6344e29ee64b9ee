"""The Kafka trigger: lands the models' events and launches retraining (``python -m pipelines.streaming.trigger``).

**Intake.** A consumer group reads each model's ``source_topic``. Every event is checked against
the model's feature spec (policy in :mod:`pipelines.streaming.intake.validation`): PII fields named in the spec are
stripped; a field the spec does not know is refused, like malformed JSON, a wrong type, a value out
of range or an oversized message. Refused events go to ``<source_topic>.dlq`` with the PII fields
removed and the reason in headers (:mod:`pipelines.streaming.intake.dead_letters`); the consumer goes on.

**Exactly once.** Good events are landed (:mod:`pipelines.streaming.landing.batch`, into a folder or
an ``s3://`` store) through the shared landing index: an event id lands once across replicas,
rebalances and crashes, and memory does not grow with the store. A duplicate is counted and
skipped; a conflict (same id, other content) is dead-lettered as ``conflicting-duplicate``. Dead
letters are flushed, and only then are the batch's offsets committed. (Publish with the event id as
key so a re-sent event lands on the same partition.) Landing runs in a child process while the
next batch is polled (:mod:`pipelines.streaming.landing.process`).

**Retraining.** :mod:`pipelines.streaming.retraining.retrainer`: on new rows or on request, once per key.

**Undecodable records.** A record the Kafka client cannot decode (a header key that is not UTF-8,
a codec it lacks: ``poll`` raises at the same offset forever) is found by
:mod:`pipelines.streaming.intake.undecodable`, dead-lettered with what can be said about it (source
topic, partition, offset and the client's error; its key and value where they can be read from
the raw batch), counted
(``undecodable``) and skipped by offset; the partition goes on.

**Resilience.** A Kafka failure (broker down at start or gone mid-stream, a failed commit) or an
unreachable landing store (landing pauses: one warning per outage) closes the clients and starts
again from the committed offsets after a pause doubling up to ``kafka_retry_max_s`` (reset only
once a batch settles: a failure that recurs right after each reconnect keeps backing off).
**Liveness is progress:** per assigned partition the age of its last settled batch is kept
(:class:`~pipelines.streaming.trigger.health.Progress`); records waiting with nothing settled for
``trigger_stall_s`` fail ``/healthz``. A record that
cannot even be dead-lettered is skipped after ``trigger_dead_letter_attempts`` tries (a poison
record: ERROR log, kept in the state). SIGTERM/SIGINT finish the batch at hand and stop within
:data:`STOP_WITHIN_S`, whatever runs: a training launch still running is handed back (its lease
released, its key left pending for the next trigger to resume) and its processes are ended.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from feature_specs import load_spec, load_specs
from pipelines.settings import Settings, get_settings
from pipelines.storage import StoreUnavailable
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.landing import exactly_once, parts
from pipelines.streaming.landing import process as landing_process
from pipelines.streaming.landing.batch import BatchOutcome
from pipelines.streaming.landing.index import LandingIndex
from pipelines.streaming.landing.log_index import open_index
from pipelines.streaming.landing.process import Landing, LandingProcessDied
from pipelines.streaming.retraining.retrainer import Launcher, Retrainer
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import RETRAIN_REQUESTS, ensure_topics, named
from pipelines.streaming.trigger.assignment import AssignmentWatch
from pipelines.streaming.trigger.clients import OnAssignment, dead_letter_producer, group_consumer
from pipelines.streaming.trigger.health import Heartbeat, Progress
from pipelines.streaming.trigger.outage import Outage, backoff
from pipelines.streaming.trigger.positions import Positions
from pipelines.streaming.trigger.settling import Batch, Settler, next_offsets

log = logging.getLogger("pipelines.streaming.trigger")
#: the longest a stop takes (the Deployment's terminationGracePeriodSeconds leaves room above it).
STOP_WITHIN_S = 20


def default_launcher(model: str, *, key: str, **params: Any) -> str:
    """The training pipeline (:func:`~pipelines.streaming.retraining.launch.launch_training`,
    imported only when a run is due)."""
    from pipelines.streaming.retraining.launch import launch_training

    return launch_training(model, key=key, **params)


class Trigger:
    """The consumer loop of the module docstring; ``launcher`` is called as
    ``launcher(model, key=trigger_key)`` and returns a run id (injectable for tests and backfills)."""

    def __init__(
        self,
        settings: Settings | None = None,
        models: Sequence[str] | None = None,
        launcher: Launcher = default_launcher,
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
            self.specs,
            self.index,
            self.state,
            self._events,
            launcher,
            lambda m: parts.row_count(self.store, m),
            self.settings.trigger_request_cooldown_s,
        )
        self._connected = self._progressed = False
        self._outage = Outage(self.settings.kafka_retry_max_s)
        self._recovery_due = False
        self._landing: Landing | None = None
        self._landing_deaths = 0  # in a row, without a batch landed between them
        self.heartbeat = Heartbeat()  # the health port's liveness signal: the loop runs...
        self.progress = Progress(self.settings.trigger_stall_s)  # ...and its partitions move on
        self._positions = Positions(self.progress)
        self.handed_back = False  # a launch was abandoned at stop (see :meth:`run`)
        self._settler = Settler(
            self.specs,
            self.topic_model,
            self.requests_topic,
            self.retrainer,
            self.retrain,
            self.state,
            self._events,
            self.stats,
            self._positions,
            self.settings.trigger_dead_letter_max_bytes,
            self.settings.trigger_dead_letter_attempts,
        )

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
                    attempt = 1 if self._progressed else attempt + 1
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
            self.handed_back = self.retrainer.close()
            self._events.close(timeout_s=3)
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
            if published := exactly_once.recover(self.store, self.index, model):
                log.warning("%s: published %d part(s) a crash had left staged", model, published)
        self._recovery_due = False

    def _session(self, landing: Landing, exit_when_idle_s: float | None) -> None:
        """One connection to the cluster, from the committed offsets until stopped or a Kafka error.

        Pipelined: batch N+1 is polled while ``landing`` lands batch N; N is then settled (dead
        letters flushed, retraining checked) and its offsets committed while N+1 lands."""
        self._connected = self._progressed = False
        self._positions.settled_to.clear()
        ensure_topics(self.settings, self.models, timeout_ms=5000)
        # reconnect to a broker that went away no slower than we retry one that never answered
        options = self.settings.kafka_options() | {
            "reconnect_backoff_max_ms": int(self.settings.kafka_retry_max_s * 1000)
        }
        producer = dead_letter_producer(options)
        try:
            consumer = group_consumer(options, self.settings)
        except KafkaError:
            producer.close(timeout=1)
            raise
        try:
            consumer.subscribe(
                [*self.topic_model, *([self.requests_topic] if self.retrain else [])],
                listener=OnAssignment(self.recover),
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
                    polled: tuple[Batch, dict[TopicPartition, OffsetAndMetadata]] = ({}, {})
                    if not self._stop.is_set():
                        polled = self._settler.poll(consumer, producer, options, 20 if landing_now else 500)
                    batch, skipped = polled
                    watch.check(consumer)
                    for tp, records in batch.items():
                        self._positions.settled_to.setdefault(tp, records[0].offset)
                    if batch:  # before landing it, which may hang: the health port then sees it waiting
                        self._positions.look(consumer, now=True)
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
                    if landed is not None or skipped:
                        offsets = next_offsets(landed or {}, consumer.assignment()) | skipped
                        consumer.commit(offsets, timeout_ms=30_000)
                        self._settled(offsets)
                    if landed is not None:
                        self.stats["batches"] += 1
                        self._landing_deaths = 0
                        self._outage.over()
                    self._positions.look(consumer)
                    busy = batch or landed or skipped or not self.retrainer.idle
                    if busy or not consumer.assignment():  # busy, or still joining: not idle
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

    def _submit(self, landing: Landing, batch: Batch) -> None:
        self._settler.submit(landing, batch)

    def _settle(self, batch: Batch, outcomes: dict[str, BatchOutcome], producer: KafkaProducer) -> None:
        self._settler.settle(batch, outcomes, producer)

    def _settled(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self._progressed = True
        self._positions.settled(offsets)
        self._settler.committed(offsets)

    def rows(self, model: str) -> int:
        return self.index.rows(model)
