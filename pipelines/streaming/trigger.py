"""The Kafka trigger: lands the models' events and launches retraining (``python -m pipelines.streaming.trigger``).

**Intake.** A consumer group reads each model's ``source_topic``. Every event is checked against
the model's feature spec (policy in :mod:`pipelines.streaming.intake`): PII fields named in the spec are
stripped; a field the spec does not know is refused, like malformed JSON, a wrong type, a value out
of range or an oversized message. Refused events go to ``<source_topic>.dlq`` unchanged, with the
reason in headers (``error.field``, ``error.reason``, ``source.topic``, ``source.partition``,
``source.offset``); the consumer goes on.

**Delivery.** Good events are appended to the landing store (one atomic, fsynced Parquet part per
model and batch); dead letters are flushed; only then are the offsets committed. A crash in between
replays the batch, and events whose id is already landed are skipped: exactly once in the store.
(Publish with the event id as key so a re-sent event lands on the same partition.)

**Retraining.** A model is retrained when its rows landed since its last run reach
``retrain.min_new_rows`` (and it has ``retrain.min_rows`` in all), or when a request
``{"model": ..., "reason": ..., "request_id": ...}`` arrives on ``mlops.retrain-requests``. Each
launch has a trigger key (``<model>-rows-<baseline>`` or ``<model>-request-<request_id>``) recorded
under the data dir before the launch, so a key launches once (:mod:`pipelines.streaming.retrain_state`).
Launches run in a background thread and are reported on ``mlops.model-events``.

**Resilience.** Any Kafka failure (broker down at start or gone mid-stream, a failed commit) closes
the clients and starts again from the committed offsets after a pause that doubles up to
``kafka_retry_max_s``. SIGTERM/SIGINT finish the batch at hand and stop.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from feature_specs import SPEC_NAMES, load_spec
from pipelines.settings import Settings, get_settings
from pipelines.streaming import health, landing
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.health import Heartbeat
from pipelines.streaming.intake import Intake, Reject
from pipelines.streaming.retrain_state import RetrainState
from pipelines.streaming.topics import RETRAIN_REQUESTS, dlq, ensure_topics, named

log = logging.getLogger("pipelines.streaming.trigger")

Launcher = Callable[..., str]


def launch_training(model: str, *, key: str, **params: Any) -> str:
    """The default launcher: the training pipeline (imported only when a run is due)."""
    from pipelines.streaming.launch import launch_training as launch

    return launch(model, key=key, **params)


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
        self.models = list(models or self.settings.trigger_models or SPEC_NAMES)
        self.launcher = launcher
        self.retrain = retrain
        self.specs = {m: load_spec(m) for m in self.models}
        self.intakes = {m: Intake(spec, self.settings.trigger_max_event_bytes) for m, spec in self.specs.items()}
        self.topic_model = {named(spec.source_topic, self.settings): m for m, spec in self.specs.items()}
        self.requests_topic = named(RETRAIN_REQUESTS, self.settings)
        self.root = self.settings.landing_dir
        self.landed = {m: landing.event_ids(self.root, m) for m in self.models}
        self.state = RetrainState(self.settings.trigger_state_path)
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._launches = ThreadPoolExecutor(max_workers=1, thread_name_prefix="launch")
        self._events = EventPublisher(self.settings)
        self._connected = False
        self.heartbeat = Heartbeat()  # the health port's liveness signal

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, exit_when_idle_s: float | None = None) -> None:
        """Consume until stopped (or idle that long); reconnects with backoff on Kafka failures."""
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    self._session(exit_when_idle_s)
                    break
                except KafkaError as exc:
                    attempt = 1 if self._connected else attempt + 1
                    delay = min(self.settings.kafka_retry_max_s, 2.0 ** (attempt - 1))
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
        finally:
            self._launches.shutdown(wait=True, cancel_futures=True)
            self._events.close()
            log.info("stopped: %s", dict(self.stats))

    def _session(self, exit_when_idle_s: float | None) -> None:
        """One connection to the cluster, from the committed offsets until stopped or a Kafka error."""
        self._connected = False
        ensure_topics(self.settings, self.models, timeout_ms=5000)
        # reconnect to a broker that went away no slower than we retry one that never answered
        options = self.settings.kafka_options() | {
            "reconnect_backoff_max_ms": int(self.settings.kafka_retry_max_s * 1000)
        }
        producer = KafkaProducer(**options, linger_ms=5, metrics_enabled=False, bootstrap_timeout_ms=5000)
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
                # kafka-python checks CRCs in pure Python (~60% of the trigger's CPU); the broker
                # verifies them when records are produced and TCP guards the wire.
                check_crcs=False,
                bootstrap_timeout_ms=5000,
            )
        except KafkaError:
            producer.close(timeout=1)
            raise
        try:
            consumer.subscribe([*self.topic_model, *([self.requests_topic] if self.retrain else [])])
            self._connected = True
            topics = ", ".join(sorted(consumer.subscription()))
            log.info("consuming %s as group %s", topics, self.settings.trigger_group)
            if self.retrain:
                self._resume_pending()
            idle_since = reported = time.monotonic()
            last = dict(self.stats)
            while not self._stop.is_set():
                if time.monotonic() - reported > 60 and dict(self.stats) != last:
                    last, reported = dict(self.stats), time.monotonic()
                    log.info("so far: %s", last)
                self.heartbeat.beat()
                batch = consumer.poll(timeout_ms=500)
                if not batch:
                    if not consumer.assignment():  # still joining the group: not idle
                        idle_since = time.monotonic()
                    elif exit_when_idle_s is not None and time.monotonic() - idle_since > exit_when_idle_s:
                        return
                    continue
                self.handle(batch, producer)
                consumer.commit(timeout_ms=30_000)
                self.stats["batches"] += 1
                idle_since = time.monotonic()
        finally:
            consumer.close(autocommit=False, timeout_ms=5000)
            producer.close(timeout=5)

    # -- one batch ----------------------------------------------------------------------

    def handle(self, batch: dict[Any, list[ConsumerRecord]], producer: KafkaProducer) -> None:
        """Land, dead-letter and act on one poll's records; durable when it returns."""
        by_model: dict[str, list[ConsumerRecord]] = {}
        requests: list[ConsumerRecord] = []
        for tp, records in batch.items():
            if tp.topic == self.requests_topic:
                requests += records
            else:
                by_model.setdefault(self.topic_model[tp.topic], []).extend(records)
        sent = []
        for model, records in by_model.items():
            rejects = self._land(model, records)
            sent += [self._dead_letter(producer, records[r.index], r) for r in rejects]
        producer.flush(timeout=30)
        for future in sent:
            if future.failed():
                raise future.exception
        for record in requests:
            self._request(record)
        for model in by_model if self.retrain else ():
            self._check_new_rows(model)

    def _land(self, model: str, records: Sequence[ConsumerRecord]) -> list[Reject]:
        good, rejects = self.intakes[model].split([r.value for r in records])
        landed = self.landed[model]
        fresh: dict[str, dict[str, Any]] = {}
        for _, event in good:
            if event["event_id"] not in landed:
                fresh.setdefault(event["event_id"], event)
        if fresh:
            table = self.intakes[model].table(list(fresh.values()), datetime.now(UTC).isoformat())
            landing.write_part(self.root, model, table)
            landed.update(fresh)
        self.stats["landed"] += len(fresh)
        self.stats["duplicates"] += len(good) - len(fresh)
        self.stats["rejected"] += len(rejects)
        if rejects:
            reasons = Counter(r.field for r in rejects)
            log.info("%s: rejected %d to the DLQ (by field: %s)", model, len(rejects), dict(reasons))
        log.debug("%s: landed %d, skipped %d already landed", model, len(fresh), len(good) - len(fresh))
        return rejects

    def _dead_letter(self, producer: KafkaProducer, record: ConsumerRecord, reject: Reject) -> Any:
        headers = [
            ("error.field", reject.field.encode()),
            ("error.reason", reject.reason.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        return producer.send(dlq(record.topic), key=record.key, value=record.value, headers=headers)

    # -- retraining ---------------------------------------------------------------------

    def rows(self, model: str) -> int:
        return len(self.landed[model])

    def _check_new_rows(self, model: str) -> None:
        if any(entry["model"] == model for _, entry in self.state.pending()):
            return  # one launch at a time per model: rows landed meanwhile count towards the next
        retrain = self.specs[model].retrain
        baseline = self.state.rows_at_last_run(model)
        total = self.rows(model)
        if total - baseline >= retrain.min_new_rows and total >= retrain.min_rows:
            self._launch(model, f"{model}-rows-{baseline}", reason="new_rows", new_rows=total - baseline)

    def _request(self, record: ConsumerRecord) -> None:
        try:
            body = json.loads(record.value)
            model = body["model"]
            if model not in self.specs:
                raise ValueError(f"model {model!r} is not handled here (handled: {', '.join(self.specs)})")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("retrain request at %s/%d/%d refused: %s", record.topic, record.partition, record.offset, exc)
            self._events.emit("retrain.rejected", "", reason=str(exc), offset=record.offset)
            return
        request_id = str(body.get("request_id") or f"{record.topic}-{record.partition}-{record.offset}")
        reason = str(body.get("reason") or "requested")
        total, needed = self.rows(model), self.specs[model].retrain.min_rows
        key = f"{model}-request-{request_id}"
        if total < needed:
            if self.state.get(key) is None:
                self.state.record(key, model, "skipped", reason=reason)
                self._events.emit("retrain.skipped", model, key=key, reason=f"{total} rows landed, {needed} needed")
            return
        self._launch(model, key, reason=reason, request_id=request_id)

    def _launch(self, model: str, key: str, reason: str, **details: Any) -> None:
        if self.state.get(key) is not None:
            return  # this trigger happened before (a replayed batch or request)
        rows = self.rows(model)
        self.state.record(key, model, "pending", rows=rows, reason=reason, landed_rows=rows, **details)
        self._events.emit("retrain.triggered", model, key=key, reason=reason, landed_rows=rows, **details)
        self._launches.submit(self._run_launcher, model, key)

    def _resume_pending(self) -> None:
        for key, entry in self.state.pending():
            log.info("%s: resuming the launch of %s", entry["model"], key)
            self._launches.submit(self._run_launcher, entry["model"], key)

    def _run_launcher(self, model: str, key: str) -> None:
        entry = self.state.get(key)
        if entry is None or entry["status"] != "pending":
            return
        try:
            run_id = self.launcher(model, key=key)
        except Exception as exc:
            log.exception("%s: training launch %s failed", model, key)
            self.state.record(key, model, "failed", error=f"{type(exc).__name__}: {exc}")
            self._events.emit("training.failed", model, key=key, error=f"{type(exc).__name__}: {exc}")
            return
        self.state.record(key, model, "launched", run_id=run_id)
        self._events.emit("training.launched", model, key=key, run_id=run_id)
        log.info("%s: training launched for %s: run %s", model, key, run_id)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.streaming.trigger", description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated models (default: all, or CONSTRUCTOS_TRIGGER_MODELS)")
    parser.add_argument("--no-retrain", action="store_true", help="only land events (backfills): never launch")
    parser.add_argument("--exit-when-idle", type=float, metavar="S", help="stop after S seconds without records")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
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
