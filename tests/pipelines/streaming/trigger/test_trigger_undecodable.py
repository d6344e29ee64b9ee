"""Records the Kafka client cannot decode, against the real broker: they are dead-lettered and
skipped by offset, the partition goes on, and liveness means progress (a stalled partition fails
``/healthz``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from hashlib import sha256
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.intake.dead_letters import scrub
from pipelines.streaming.landing.process import LandingProcess
from pipelines.streaming.topics import dlq, ensure_topics, named
from pipelines.streaming.trigger.health import serve_health
from pipelines.streaming.trigger.loop import Trigger
from tests.helpers import free_port
from tests.pipelines.streaming.trigger.test_kafka_trigger import Launches, landed_rows, read_topic, uncommitted

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
SPEC = load_spec(MODEL)


class RawHeaderKey(str):
    """A header key whose bytes are not UTF-8 (kafka-python's producer encodes header keys with
    ``str.encode``; the broker accepts any bytes, the consumer then cannot decode the record)."""

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    raw: bytes

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


def produce(settings: Settings, topic: str, records: Sequence[Record], partition: int = 0, **options: Any) -> None:
    producer = KafkaProducer(**settings.kafka_options(), linger_ms=0, **options)
    for key, value, headers in records:
        producer.send(named(topic, settings), key=key, value=value, headers=headers, partition=partition).get(30)
    producer.close()


def events(n: int, seed: int) -> list[dict[str, Any]]:
    return to_events(generate(MODEL, n, seed=seed), seed=seed)


def run_for(trigger: Trigger, idle_s: float = 2, limit_s: float = 40) -> float:
    """Run until idle; a trigger that does not get there within ``limit_s`` is stopped (stalled)."""
    start = time.monotonic()
    thread = threading.Thread(target=trigger.run, kwargs={"exit_when_idle_s": idle_s}, daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        trigger.stop()
        thread.join(30)
    return time.monotonic() - start


def good_records(values: list[dict[str, Any]]) -> list[Record]:
    return [(e["event_id"].encode(), json.dumps(e).encode(), []) for e in values]


def test_a_record_with_a_non_utf8_header_key_is_dead_lettered_and_the_partition_goes_on(
    kafka_settings: Settings,
) -> None:
    ensure_topics(kafka_settings, [MODEL])
    good = events(30, 21)
    bad: Record = (
        b"bad-key",
        json.dumps(good[0] | {"event_id": "in-bad"}).encode(),
        [(RawHeaderKey(b"\xff\xfe"), b"v")],
    )
    produce(kafka_settings, SPEC.source_topic, [*good_records(good[:10]), bad, *good_records(good[10:])])
    trigger = Trigger(kafka_settings, [MODEL], launcher=Launches())
    elapsed = run_for(trigger)
    assert elapsed < 30, "the trigger stalled on the undecodable record"
    assert {r["event_id"] for r in landed_rows(kafka_settings, MODEL)} == {e["event_id"] for e in good}
    assert uncommitted(kafka_settings, SPEC.source_topic) == 0
    (letter,) = read_topic(kafka_settings, dlq(SPEC.source_topic))
    headers = dict(letter.headers)
    assert headers["error.field"] == b"record" and b"CorruptRecordError" in headers["error.reason"]
    assert headers["source.offset"] == b"10" and headers["source.partition"] == b"0"
    # read from the raw batch past the client, and scrubbed like any copy (PII out, the key a digest)
    assert letter.value == scrub(bad[1], SPEC)[0] and b"customer_name" not in letter.value
    assert letter.key == headers["key.sha256"] == sha256(b"bad-key").hexdigest().encode()
    assert headers["value.recovered"] == b"read from the raw record batch"
    assert trigger.stats["undecodable"] == 1 and trigger.stats["landed"] == 30


def test_healthz_fails_naming_the_partition_when_records_wait_and_nothing_settles(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"trigger_stall_s": 2.0})
    ensure_topics(settings, [MODEL])
    trigger = Trigger(settings, [MODEL], launcher=Launches())
    port = free_port()
    server = serve_health(port, trigger.stats, trigger.heartbeat, 120, host="127.0.0.1", progress=trigger.progress)
    thread = threading.Thread(target=trigger.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not isinstance(trigger._landing, LandingProcess) or not trigger.progress.ages():
            assert time.monotonic() < deadline, "the trigger did not join its group"
            time.sleep(0.05)
        pid = trigger._landing._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # landing hangs: the loop blocks on it, nothing settles
        produce(settings, SPEC.source_topic, good_records(events(20, 22)), partition=1)
        deadline = time.monotonic() + 20
        while (answer := httpx.get(f"{url}/healthz")).status_code == 200:
            assert time.monotonic() < deadline, "healthz still answers ok with a stalled partition"
            time.sleep(0.2)
        assert answer.status_code == 503
        topic = named(SPEC.source_topic, settings)
        assert re.search(rf"stalled: {re.escape(topic)}/1 has \d+ record\(s\) waiting, none settled for", answer.text)
        metrics = httpx.get(f"{url}/metrics").text
        assert f'constructos_trigger_partition_waiting_records{{partition="1",topic="{topic}"}}' in metrics
        assert f'constructos_trigger_partition_settled_age_seconds{{partition="1",topic="{topic}"}}' in metrics
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "healthz did not recover once the partition settled"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            os.kill(trigger._landing._process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        trigger.stop()
        thread.join(30)
        server.shutdown()
        server.server_close()
    assert trigger.stats["landed"] == 20


VALID = events(40, 23)
header_keys = st.text(max_size=8) | st.binary(min_size=1, max_size=6).map(RawHeaderKey)
records = st.tuples(
    st.none() | st.binary(max_size=40),
    st.sampled_from([json.dumps(e).encode() for e in VALID]) | st.binary(max_size=120),
    st.lists(st.tuples(header_keys, st.binary(max_size=20)), max_size=3),
)
chunks = st.tuples(st.sampled_from([None, "gzip", "lz4", "zstd"]), st.lists(records, min_size=1, max_size=6))


def test_whole_records_fuzzed_through_the_broker_are_each_landed_or_dead_lettered(kafka_settings: Settings) -> None:
    """Key, value, headers (also header keys that are not UTF-8) and the batch's codec, drawn by
    hypothesis, sent to one partition; one trigger run then accounts for every offset."""
    drawn: list[tuple[str | None, list[Record]]] = []

    @given(chunks)
    @hypothesis_settings(max_examples=25, deadline=None, database=None, derandomize=True)
    def draw(chunk: tuple[str | None, list[Record]]) -> None:
        drawn.append(chunk)

    draw()
    ensure_topics(kafka_settings, [MODEL])
    sent = []
    for codec, chunk in drawn:
        chunk = [(k, v if k is not None or v else b"x", h) for k, v, h in chunk]  # Kafka needs a key or a value
        produce(kafka_settings, SPEC.source_topic, chunk, compression_type=codec)
        sent += chunk
    trigger = Trigger(kafka_settings, [MODEL], launcher=Launches())
    assert run_for(trigger, limit_s=60) < 50, "the trigger stalled"
    assert uncommitted(kafka_settings, SPEC.source_topic) == 0
    offsets = [int(dict(r.headers)["source.offset"]) for r in read_topic(kafka_settings, dlq(SPEC.source_topic))]
    assert len(offsets) == len(set(offsets))  # one dead letter per source offset
    landed = trigger.stats["landed"] + trigger.stats["duplicates"]
    assert landed + len(offsets) == len(sent)  # every record: landed (or a duplicate of one) or dead-lettered
    assert trigger.stats["undecodable"] == sum(any(not utf8(k.encode()) for k, _ in h) for _, _, h in sent) > 0


def utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
