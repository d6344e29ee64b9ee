"""The trigger as a process against a real broker: SIGKILL mid-batch, broker down at start, broker restart."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.landing.folder import folder_parts
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import dlq, ensure_topics, named
from tests.kafka_broker import Broker, TriggerProcess, isolated_settings

pytestmark = pytest.mark.integration


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def landed_ids(settings: Settings, model: str) -> list[str]:
    """Event ids of every landed row, duplicates included."""
    return [
        i for p in folder_parts(settings.landing_dir, model) for i in pq.read_table(p).column("event_id").to_pylist()
    ]


def test_sigkill_mid_batch_loses_and_duplicates_nothing(kafka_settings: Settings) -> None:
    model = "credit_risk"
    events = to_events(generate(model, 12_000, seed=21), seed=21)
    bad_ids = {e["event_id"] for e in events[::97]}
    for e in events[::97]:
        e["company_age_years"] = "unknown"  # a wrong type: dead-lettered, not landed
    ensure_topics(kafka_settings, [model])
    publish_events(model, events, kafka_settings)

    replays = 0
    for _ in range(3):  # killed right after a part is landed, before its offsets are committed
        trigger = TriggerProcess(kafka_settings, model, poll_records=500)
        trigger.wait_for(r"landed [1-9]")
        trigger.kill()
        replays += any(re.search(r"skipped [1-9]\d* already landed", line) for line in trigger.lines)
    final = TriggerProcess(kafka_settings, model, "--exit-when-idle", "3", poll_records=500)
    assert final.proc.wait(120) == 0, final.log()
    final._reader.join(5)
    replays += any(re.search(r"skipped [1-9]\d* already landed", line) for line in final.lines)

    ids = landed_ids(kafka_settings, model)
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert duplicated == []
    assert set(ids) == {e["event_id"] for e in events} - bad_ids
    assert replays >= 1, "no kill fell between landing and commit: the replay path was not exercised"

    consumer = KafkaConsumer(
        named(dlq(load_spec(model).source_topic), kafka_settings),
        **kafka_settings.kafka_options(),
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    dead = {json.loads(r.value)["event_id"] for r in consumer}  # at least once: a replayed batch re-sends
    consumer.close()
    assert dead == bad_ids


def test_broker_down_at_start_and_restarted_mid_stream(tmp_path: Path) -> None:
    broker = Broker.private(tmp_path / "broker")
    settings = isolated_settings(broker.bootstrap, tmp_path / "data")
    model = "stock_demand"
    trigger = TriggerProcess(settings, model, poll_records=200)
    try:
        trigger.wait_for(r"failed \(KafkaTimeoutError.*retrying in \d+s \(attempt 2\)", timeout=60)
        assert trigger.proc.poll() is None  # waiting, not crash-looping

        broker.up()
        trigger.wait_for(r"consuming .* as group", timeout=60)
        first = to_events(generate(model, 8000, seed=1), seed=1)
        publish_events(model, first, settings)
        wait_until(lambda: len(folder_parts(settings.landing_dir, model)) >= 2, 60, "the first parts")

        broker.down()  # mid-stream: part of the first events is still unread
        time.sleep(2)
        broker.up()
        wait_until(lambda: len(set(landed_ids(settings, model))) == 8000, 120, "the first events after the restart")

        second = to_events(generate(model, 3000, seed=2), seed=2)
        publish_events(model, second, settings)
        wait_until(lambda: len(set(landed_ids(settings, model))) == 11_000, 60, "the events sent after the restart")
        assert trigger.proc.poll() is None

        ids = landed_ids(settings, model)
        assert len(ids) == len(set(ids)) == 11_000
        assert set(ids) == {e["event_id"] for e in first + second}

        trigger.proc.send_signal(signal.SIGTERM)
        assert trigger.proc.wait(60) == 0, trigger.log()
    finally:
        if trigger.proc.poll() is None:
            trigger.kill()
        broker.down()
