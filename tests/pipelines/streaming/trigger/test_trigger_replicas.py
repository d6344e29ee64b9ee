"""Three trigger replicas in one consumer group against the real broker, two of them SIGKILLed and
restarted at random moments while 30k events stream in: every event lands exactly once, every
launch key is launched exactly once, and no lifecycle event carries an empty run id. On a local
landing folder and ledger, and with both on the real S3 server (``make stores-up``)."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.landing import exactly_once
from pipelines.streaming.landing import parts as landing_parts
from pipelines.streaming.landing.index import LandingIndex, SqliteIndex
from pipelines.streaming.landing.log_index import LogIndex
from pipelines.streaming.publish import publish_events
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import MODEL_EVENTS, ensure_topics, named
from tests.kafka_broker import TriggerProcess
from tests.pipelines.streaming.trigger.test_kafka_trigger import read_topic

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
EVENTS = 30_000


def landed_ids(settings: Settings, model: str = MODEL) -> list[str]:
    """Every event id in the published parts, as often as it was landed."""
    store = settings.landing_store
    blobs = store.read_many(landing_parts.part_keys(store, model))
    return [i for b in blobs.values() for i in pq.read_table(pa.BufferReader(b), columns=["event_id"])[0].to_pylist()]


def committed_offsets(settings: Settings, topic: str) -> int:
    """The trigger group's committed offsets on ``topic``, summed over its partitions."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=settings.trigger_group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close(autocommit=False)


@pytest.fixture
def settings(landing_settings: Settings) -> Settings:
    return landing_settings.model_copy(update={"pipeline_runner": "dry-run"})


def test_three_replicas_with_kills_land_once_and_launch_once(settings: Settings) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    store = settings.landing_store
    ensure_topics(settings, [MODEL])
    events = to_events(generate(MODEL, EVENTS, seed=31), seed=31)
    resent = rng.sample(events, 1500)  # re-sent under another key: another partition, maybe another replica

    replicas = [TriggerProcess(settings, MODEL, poll_records=500, retrain=True) for _ in range(3)]
    kills = 0
    try:
        for chunk in range(6):
            publish_events(MODEL, events[chunk * 5000 : (chunk + 1) * 5000], settings)
            if chunk in (1, 3):
                producer = KafkaProducer(**settings.kafka_options())
                for e in resent[(chunk // 2) * 750 : (chunk // 2 + 1) * 750]:
                    producer.send(
                        named(load_spec(MODEL).source_topic, settings), key=b"other", value=json.dumps(e).encode()
                    )
                producer.close()
            if chunk in (1, 2, 4):  # SIGKILL one of the first two replicas at a random moment, restart it
                time.sleep(rng.uniform(0.0, 2.0))
                victim = rng.randrange(2)
                replicas[victim].kill()
                kills += 1
                time.sleep(rng.uniform(0.0, 3.0))
                replicas[victim] = TriggerProcess(settings, MODEL, poll_records=500, retrain=True)
        index: LandingIndex = (
            SqliteIndex(settings.landing_dir) if store.local else LogIndex(store, settings.data_dir / "check")
        )
        deadline = time.monotonic() + 180
        while index.rows(MODEL) < EVENTS or RetrainState(settings.ledger_store).pending():
            assert time.monotonic() < deadline, f"seed {seed}: {index.rows(MODEL)} landed\n{replicas[2].log()}"
            time.sleep(0.5)
        time.sleep(3)  # let the last batches commit and the last events go out
    finally:
        for replica in replicas:
            replica.proc.send_signal(signal.SIGTERM)
        for replica in replicas:
            replica.proc.wait(60)

    ids = landed_ids(settings)
    assert [i for i, n in Counter(ids).items() if n > 1] == [], f"seed {seed}: duplicates landed"
    assert set(ids) == {e["event_id"] for e in events}, f"seed {seed}: events lost"
    assert index.rows(MODEL) == EVENTS
    staged = [k.rsplit("/", 1)[-1] for k in store.list_keys(f"{MODEL}/{exactly_once.STAGING}")]
    assert not [p for p in staged if index.committed(MODEL, p)], "a committed part left unpublished"
    # (an uncommitted one is a kill between write and commit: garbage, removed after 10 minutes)

    state = RetrainState(settings.ledger_store)
    keys = {}
    ledgers = settings.ledger_store
    for ledger in ledgers.list_keys("launches", ".json"):
        record = json.loads(ledgers.read_bytes(ledger))
        keys[record["key"]] = record
        assert record["attempt"] == 1 and record["run_id"] == f"dry-run-{record['key']}", record
        assert state.get(record["key"])["status"] == "launched"  # type: ignore[index]
    assert len(keys) >= EVENTS // load_spec(MODEL).retrain.min_new_rows - 1

    lifecycle = [json.loads(r.value) for r in read_topic(settings, MODEL_EVENTS)]
    launched = Counter(e["key"] for e in lifecycle if e["type"] == "training.launched")
    assert all(e["run_id"] for e in lifecycle if "run_id" in e), "a lifecycle event with an empty run id"
    assert max(launched.values()) == 1 and set(launched) <= set(keys)
    counts = f"{kills} kills, {len(keys)} keys, {len(launched)} launched, {len(staged)} orphans"
    print(f"{store.uri}, {ledgers.uri}: seed {seed}: {counts}")
