"""The trigger against a real broker, in-process: landing, dead letters, PII, retraining."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings, get_settings
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.intake.dead_letters import scrub
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.landing import process as landing_process
from pipelines.streaming.landing.index import SqliteIndex
from pipelines.streaming.landing.process import InlineLanding, LandingProcess, LandingProcessDied
from pipelines.streaming.publish import main as publish_main
from pipelines.streaming.publish import publish_events, request_retrain
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.launch import launch_training, ledger_key
from pipelines.streaming.retraining.retrainer import Retrainer
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import MODEL_EVENTS, all_topics, dlq, ensure_topics, named
from pipelines.streaming.trigger.loop import Trigger
from tests.kafka_broker import free_port

pytestmark = pytest.mark.integration


class Launches:
    """Records launches; the trigger's contract with the training launcher."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: str, *, key: str, **params: Any) -> str:
        self.calls.append((model, key))
        return f"run-{len(self.calls)}"


def send_raw(settings: Settings, topic: str, values: Sequence[bytes | None]) -> None:
    producer = KafkaProducer(**settings.kafka_options())
    for i, value in enumerate(values):
        producer.send(named(topic, settings), key=str(i).encode(), value=value)
    producer.flush()
    producer.close()


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning."""
    consumer = KafkaConsumer(
        named(topic, settings), **settings.kafka_options(), auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    records = list(consumer)
    consumer.close()
    return records


def uncommitted(settings: Settings, topic: str) -> int:
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=settings.trigger_group, enable_auto_commit=False)
    parts = [TopicPartition(named(topic, settings), p) for p in range(settings.kafka_topic_partitions)]
    ends = consumer.end_offsets(parts)
    lag = sum(ends[tp] - (consumer.committed(tp) or 0) for tp in parts)
    consumer.close(autocommit=False)
    return lag


def landed_rows(settings: Settings, model: str) -> list[dict[str, Any]]:
    """Every landed row, duplicates included (the store's raw parts; a folder or ``s3://``)."""
    store = settings.landing_store
    blobs = store.read_many(landing_parts.part_keys(store, model))
    return [row for key in sorted(blobs) for row in pq.read_table(pa.BufferReader(blobs[key])).to_pylist()]


def test_topics_are_created_once(kafka_settings: Settings) -> None:
    assert sorted(ensure_topics(kafka_settings)) == sorted(named(t, kafka_settings) for t in all_topics())
    assert ensure_topics(kafka_settings) == []


def test_good_events_land_once_and_bad_ones_go_to_the_dlq(kafka_settings: Settings) -> None:
    spec = load_spec("credit_risk")
    events = to_events(generate("credit_risk", 300, seed=11), seed=11)
    events[0]["annual_revenue_eur"] = None
    good = [json.dumps(e).encode() for e in events]
    bad = {
        b"{oops": "event",
        json.dumps(events[1] | {"company_age_years": "old", "event_id": "bad-1"}).encode(): "company_age_years",
        json.dumps(events[2] | {"customer_email": "a@b.example", "event_id": "bad-2"}).encode(): "unknown_field",
        json.dumps(events[3] | {"note": "x" * 70_000, "event_id": "bad-3"}).encode(): "event",
        json.dumps([1, 2]).encode(): "event",
    }
    values = good[:100] + list(bad) + good[100:] + good[:50]  # the last 50 are re-sent duplicates
    ensure_topics(kafka_settings, ["credit_risk"])
    send_raw(kafka_settings, spec.source_topic, values)

    launches = Launches()
    trigger = Trigger(kafka_settings, ["credit_risk"], launcher=launches)
    trigger.run(exit_when_idle_s=2)

    rows = landed_rows(kafka_settings, "credit_risk")
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)  # each once
    assert set(rows[0]) == {"event_id", "occurred_at", "landed_at", *spec.feature_names, spec.target.name}
    first = next(r for r in rows if r["event_id"] == events[0]["event_id"])
    assert first["annual_revenue_eur"] is None and first["company_age_years"] == events[0]["company_age_years"]
    assert trigger.stats["duplicates"] == 50 and trigger.stats["rejected"] == len(bad)
    assert uncommitted(kafka_settings, spec.source_topic) == 0
    assert launches.calls == []  # 300 rows: below the threshold

    letters = read_topic(kafka_settings, dlq(spec.source_topic))
    without_pii = sorted((scrub(value, spec)[0], field) for value, field in bad.items())
    assert sorted((r.value, dict(r.headers)["error.field"].decode()) for r in letters) == without_pii
    index = {sha256(str(i).encode()).hexdigest().encode(): i for i in range(len(values))}
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["source.topic"].decode() == named(spec.source_topic, kafka_settings)
        # the declared fields kept, PII removed, traceable to its source record (its key, not the
        # event's id, is kept as a digest)
        assert letter.key == headers["key.sha256"] and scrub(values[index[letter.key]], spec)[0] == letter.value
        assert not set(spec.pii_names) & (json.loads(letter.value).keys() if letter.value.startswith(b'{"') else set())
        assert int(headers["source.offset"]) >= 0 and headers["error.reason"]


def test_new_rows_launch_training_once_per_key(kafka_settings: Settings) -> None:
    spec = load_spec("stock_demand")
    n = spec.retrain.min_new_rows
    events = to_events(generate("stock_demand", n + 10, seed=5), seed=5)
    ensure_topics(kafka_settings, ["stock_demand"])
    publish_events("stock_demand", events[: n - 1], kafka_settings)
    launches = Launches()
    Trigger(kafka_settings, ["stock_demand"], launcher=launches).run(exit_when_idle_s=2)
    assert launches.calls == []  # one row short

    publish_events("stock_demand", events[n - 1 :], kafka_settings)
    Trigger(kafka_settings, ["stock_demand"], launcher=launches).run(exit_when_idle_s=2)
    assert launches.calls == [("stock_demand", "stock_demand-rows-0")]

    # everything again, through a new consumer group: all duplicates, no second launch
    again = kafka_settings.model_copy(update={"trigger_group": f"again-{uuid.uuid4().hex[:6]}"})
    replay = Trigger(again, ["stock_demand"], launcher=launches)
    replay.run(exit_when_idle_s=2)
    assert replay.stats["duplicates"] == n + 10 and replay.stats["landed"] == 0
    assert launches.calls == [("stock_demand", "stock_demand-rows-0")]

    state = RetrainState(kafka_settings.ledger_store)
    assert state.rows_at_last_run("stock_demand") == n + 10  # the next run waits for n rows more
    entry = state.get("stock_demand-rows-0")
    assert entry is not None and entry["status"] == "launched" and entry["run_id"] == "run-1"
    types = [json.loads(r.value)["type"] for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert types == ["retrain.triggered", "training.launched"]


def test_retrain_requests(kafka_settings: Settings) -> None:
    spec = load_spec("lead_score")
    ensure_topics(kafka_settings, ["lead_score"])
    launches = Launches()
    request_retrain("lead_score", "too early", kafka_settings, request_id="r0")  # no rows yet: skipped
    Trigger(kafka_settings, ["lead_score"], launcher=launches).run(exit_when_idle_s=2)
    assert launches.calls == []

    publish_events("lead_score", to_events(generate("lead_score", spec.retrain.min_rows, seed=2)), kafka_settings)
    Trigger(kafka_settings, ["lead_score"], launcher=launches).run(exit_when_idle_s=2)
    request_retrain("lead_score", "drift on opportunity_value", kafka_settings, request_id="r1")
    request_retrain("lead_score", "the same request, delivered twice", kafka_settings, request_id="r1")
    send_raw(kafka_settings, "mlops.retrain-requests", [b'{"model": "no_such_model"}', b"not json"])
    trigger = Trigger(kafka_settings, ["lead_score"], launcher=launches)
    trigger.run(exit_when_idle_s=2)
    assert launches.calls == [("lead_score", "lead_score-request-r1")]

    events = [json.loads(r.value) for r in read_topic(kafka_settings, MODEL_EVENTS)]
    ours = [e for e in events if e["model"] == "lead_score"]  # one model's events are in order
    assert [e["type"] for e in ours] == ["retrain.skipped", "retrain.triggered", "training.launched"]
    assert ours[1]["key"] == "lead_score-request-r1" and ours[1]["reason"] == "drift on opportunity_value"
    assert sorted(e["type"] for e in events if e not in ours) == ["retrain.rejected"] * 2


def test_a_launch_interrupted_by_a_crash_is_resumed_with_its_key(kafka_settings: Settings) -> None:
    state = RetrainState(kafka_settings.ledger_store)
    state.record("credit_risk-request-x", "credit_risk", "pending", rows=1200, reason="crash test")
    launches = Launches()
    Trigger(kafka_settings, ["credit_risk"], launcher=launches).run(exit_when_idle_s=1)
    assert launches.calls == [("credit_risk", "credit_risk-request-x")]
    Trigger(kafka_settings, ["credit_risk"], launcher=launches).run(exit_when_idle_s=1)
    assert len(launches.calls) == 1
    entry = RetrainState(kafka_settings.ledger_store).get("credit_risk-request-x")
    assert entry is not None and entry["status"] == "launched"


def test_a_failed_launch_is_reported(kafka_settings: Settings) -> None:
    def broken(model: str, *, key: str, **params: Any) -> str:
        raise RuntimeError("the cluster said no")

    state = RetrainState(kafka_settings.ledger_store)
    state.record("credit_risk-request-y", "credit_risk", "pending", rows=1200, reason="x")
    Trigger(kafka_settings, ["credit_risk"], launcher=broken).run(exit_when_idle_s=1)
    entry = RetrainState(kafka_settings.ledger_store).get("credit_risk-request-y")
    assert entry is not None and entry["status"] == "failed" and "the cluster said no" in entry["error"]
    events = [json.loads(r.value) for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert [(e["type"], e["key"]) for e in events] == [("training.failed", "credit_risk-request-y")]


def test_lifecycle_events_for_other_steps(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [])
    publisher = EventPublisher(kafka_settings)
    sent = publisher.emit("model.promoted", "credit_risk", version="7")
    publisher.close()
    (record,) = read_topic(kafka_settings, MODEL_EVENTS)
    assert json.loads(record.value) == sent and record.key == b"credit_risk"


def test_lifecycle_events_never_fail_the_caller_when_kafka_is_down() -> None:
    settings = Settings().model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    event = EventPublisher(settings).emit("model.promoted", "credit_risk", version="7")
    assert event["type"] == "model.promoted"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_publish_cli_sends_a_file_that_the_trigger_lands(
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    frame = generate("lead_score", 120, seed=8).frame  # rows without event ids: the publisher adds them
    path = tmp_path / f"rows{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    for name, value in {
        "KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": kafka_settings.kafka_topic_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        publish_main(["lead_score", "--file", str(path)])
    finally:
        get_settings.cache_clear()
    assert f"sent 120 lead_score events (file {path})" in capsys.readouterr().out

    trigger = Trigger(kafka_settings, ["lead_score"], launcher=Launches())
    trigger.run(exit_when_idle_s=2)
    assert trigger.stats["landed"] == 120 and trigger.stats["rejected"] == 0
    rows = landed_rows(kafka_settings, "lead_score")
    assert sorted(r["opportunity_value"] for r in rows) == sorted(frame["opportunity_value"])
    assert sum(r["lead_source"] is None for r in rows) == frame["lead_source"].isna().sum()  # nulls stay null


def test_a_key_whose_launcher_died_is_launched_once_its_lease_expires(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica resuming a pending key meets the lease of a launcher that died: it looks again
    when the lease would expire, takes the key over (attempt 2) and reports the launch once."""
    for name, value in {
        "DATA_DIR": kafka_settings.data_dir,
        "PIPELINE_RUNNER": "dry-run",
        "LAUNCH_LEASE_S": 1.5,
    }.items():
        monkeypatch.setenv(f"CONSTRUCTOS_{name}", str(value))
    get_settings.cache_clear()
    ensure_topics(kafka_settings, ["credit_risk"])
    key, store = "credit_risk-request-z", kafka_settings.ledger_store
    assert store.uri == get_settings().ledger_store.uri  # the launcher's ledger is the trigger's
    state = RetrainState(store)
    state.record(key, "credit_risk", "pending", rows=1200, reason="lease test")
    dead = {"key": key, "model": "credit_risk", "status": "running", "attempt": 1, "run_id": "", "holder": "gone:1:x"}
    assert ledger.write_doc(store, ledger_key(key), dead | {"lease_until": time.time() + 1.5}, None)

    events = EventPublisher(kafka_settings)
    retrainer = Retrainer({}, SqliteIndex(kafka_settings.landing_dir), state, events, launch_training)
    try:
        retrainer.resume_pending()
        deadline = time.monotonic() + 20
        while (state.get(key) or {}).get("status") == "pending":
            assert time.monotonic() < deadline, "the key was never launched"
            time.sleep(0.2)
    finally:
        retrainer.close()
        events.close()
        get_settings.cache_clear()
    entry = state.get(key)
    assert entry is not None and entry["status"] == "launched" and entry["run_id"] == f"dry-run-{key}"
    assert json.loads(store.read_bytes(ledger_key(key)))["attempt"] == 2
    launched = [json.loads(r.value) for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert [(e["type"], e["key"]) for e in launched] == [("training.launched", key)]


@pytest.mark.parametrize(
    ("codec", "landing_process"), [("gzip", False), ("snappy", True), ("lz4", False), ("zstd", True)]
)
def test_every_kafka_codec_is_read_landing_in_a_child_or_in_process(
    kafka_settings: Settings, codec: str, landing_process: bool
) -> None:
    """A producer may compress with any codec Kafka has: one the trigger could not decode would fail
    every poll of its partition (a stall). Landing in a child process or in the trigger's own lands the same."""
    spec = load_spec("lead_score")
    settings = kafka_settings.model_copy(update={"trigger_landing_process": landing_process})
    events = to_events(generate("lead_score", 300, seed=3), seed=3)
    ensure_topics(settings, ["lead_score"])
    producer = KafkaProducer(**settings.kafka_options(), compression_type=codec, linger_ms=50)
    for event in events:
        producer.send(
            named(spec.source_topic, settings), key=event["event_id"].encode(), value=json.dumps(event).encode()
        )
    producer.flush()
    producer.close()

    trigger = Trigger(settings, ["lead_score"], launcher=Launches())
    trigger.run(exit_when_idle_s=2)
    assert sorted(r["event_id"] for r in landed_rows(settings, "lead_score")) == sorted(e["event_id"] for e in events)
    assert trigger.stats["landed"] == len(events) and uncommitted(settings, spec.source_topic) == 0


def test_a_killed_landing_process_is_replaced_and_nothing_is_lost(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    spec = load_spec("credit_risk")
    ensure_topics(kafka_settings, ["credit_risk"])
    trigger = Trigger(kafka_settings, ["credit_risk"], launcher=Launches())
    runner = threading.Thread(target=trigger.run, kwargs={"exit_when_idle_s": 3})
    runner.start()
    deadline = time.monotonic() + 60
    while not isinstance(trigger._landing, LandingProcess):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.05)
    first = trigger._landing
    os.kill(first._process.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    events = to_events(generate("credit_risk", 500, seed=8), seed=8)
    publish_events("credit_risk", events[:250], kafka_settings)
    publish_events("credit_risk", events, kafka_settings)  # the first half again: duplicates
    runner.join(120)
    assert not runner.is_alive()
    assert sorted(r["event_id"] for r in landed_rows(kafka_settings, "credit_risk")) == sorted(
        e["event_id"] for e in events
    )
    assert uncommitted(kafka_settings, spec.source_topic) == 0
    assert any("the landing process exited (exit code -9)" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_a_landing_process_that_keeps_dying_is_restarted_with_backoff(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that cannot land (say, it dies on start) is not restarted in a tight loop: 1 s, 2 s,
    4 s…; once a batch lands the count starts again, and nothing is lost meanwhile."""
    deaths = {"left": 3}

    class DiesThrice(InlineLanding):
        def submit(self, batches: Any) -> None:
            if deaths["left"]:
                deaths["left"] -= 1
                raise LandingProcessDied("the landing process exited (exit code 1)")
            super().submit(batches)

    monkeypatch.setattr(landing_process, "start", DiesThrice)
    ensure_topics(kafka_settings, ["lead_score"])
    events = to_events(generate("lead_score", 200, seed=12), seed=12)
    publish_events("lead_score", events, kafka_settings)
    trigger = Trigger(kafka_settings, ["lead_score"], launcher=Launches())
    started = time.monotonic()
    trigger.run(exit_when_idle_s=2)
    assert sorted(r["event_id"] for r in landed_rows(kafka_settings, "lead_score")) == sorted(
        e["event_id"] for e in events
    )
    restarts = [r.getMessage() for r in caplog.records if "starting another" in r.getMessage()]
    assert [m.split("starting another ")[1] for m in restarts] == [
        "in 1s (attempt 1)",
        "in 2s (attempt 2)",
        "in 4s (attempt 3)",
    ]
    assert trigger.stats["landing_restarts"] == 3 and trigger._landing_deaths == 0
    assert time.monotonic() - started >= 7
