"""Against the real broker: personal data leaves the trigger in no position, ambiguous input is
refused, and a dead letter the broker refuses keeps its reason, once per source offset."""

from __future__ import annotations

import json
import logging
import os
from hashlib import sha256
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry, generate_latest

from feature_specs import load_spec
from pipelines.settings import Settings
from pipelines.streaming.intake.dead_letters import scrub
from pipelines.streaming.topics import MODEL_EVENTS, RETRAIN_REQUESTS, dlq, ensure_topics, named
from pipelines.streaming.trigger.health import Heartbeat, TriggerCollector
from pipelines.streaming.trigger.loop import Trigger
from tests.pipelines.streaming.trigger.test_kafka_trigger import Launches, landed_rows, read_topic, uncommitted
from tests.pipelines.streaming.trigger.test_trigger_undecodable import RawHeaderKey, Record, events, produce, run_for

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
SPEC = load_spec(MODEL)
PII = SPEC.pii_names[0]


def mark(n: int) -> str:
    return f"jane.doe{n}@mark.example"


def letters_of(settings: Settings) -> list[Any]:
    return read_topic(settings, dlq(SPEC.source_topic))


def everything_in(letter: Any) -> bytes:
    return b"|".join([letter.key or b"", letter.value or b"", *(k.encode() + v for k, v in letter.headers)])


def test_marked_personal_values_reach_no_dead_letter_log_metric_or_landed_row(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    base = events(12, 31)
    escaped = PII.replace("_", "\\u005f") if "_" in PII else "\\u00" + PII[0].encode().hex() + PII[1:]
    planted: list[Record] = [
        (None, json.dumps(base[0] | {PII: mark(1)}).encode(), []),  # a PII value: stripped, landed
        (None, b'{"event_id": "e2", "' + escaped.encode() + b'": "' + mark(2).encode() + b'", "oops"', []),  # not JSON
        (None, json.dumps(base[1] | {PII: mark(3)}).replace(f'"{PII}"', f'"{escaped}"').encode(), []),  # escaped key
        (None, json.dumps(base[2] | {mark(4): 1}).encode(), []),  # a field *named* by a personal value
        (None, json.dumps(base[3] | {"x": 1}).replace('"x"', f'"{mark(5)}\\ud800"').encode(), []),  # ... and broken
        (None, json.dumps(base[4] | {"note": 1}).encode(), [("x-owner", mark(6).encode())]),  # in a header
        (mark(7).encode(), json.dumps(base[5] | {"note": 2}).encode(), []),  # in the record's key
        (None, json.dumps(base[6]).encode(), [(RawHeaderKey(mark(8).encode() + b"\xff"), b"")]),  # undecodable
        (None, json.dumps(base[7] | {mark(9): 1, mark(10): 2}).encode()[:-5], []),  # unknown names, cut short
    ]
    ensure_topics(kafka_settings, [MODEL])
    produce(kafka_settings, SPEC.source_topic, planted)
    produce(kafka_settings, RETRAIN_REQUESTS, [(None, json.dumps({"model": MODEL, mark(11): 1}).encode(), [])])
    produce(kafka_settings, RETRAIN_REQUESTS, [(None, f'{{"model": 1, "{mark(12)}\\ud800": 2}}'.encode(), [])])
    trigger = Trigger(kafka_settings, [MODEL], launcher=Launches())
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.INFO, logger="kafka"):
        run_for(trigger)
    letters = letters_of(kafka_settings)
    assert len(letters) == 7 and uncommitted(kafka_settings, SPEC.source_topic) == 0
    registry = CollectorRegistry()
    registry.register(TriggerCollector(trigger.stats, Heartbeat(), trigger.progress))
    places = {
        "dead letters": b"\n".join(map(everything_in, letters)),
        "log": caplog.text.encode(),
        "metrics": generate_latest(registry),
        "landed rows": repr(landed_rows(kafka_settings, MODEL)).encode(),
        "model events": b"\n".join(r.value for r in read_topic(kafka_settings, MODEL_EVENTS)),
    }
    for n in range(1, 13):
        for place, text in places.items():
            assert mark(n).encode() not in text, f"marker {n} leaked into the {place}"
            assert mark(n).split("@")[0].encode() not in text, f"marker {n} (its start) leaked into the {place}"
    fields = {dict(letter.headers)["error.field"] for letter in letters}
    assert fields == {b"unknown_field", b"event", b"record"}
    by_offset = {int(dict(letter.headers)["source.offset"]): dict(letter.headers) for letter in letters}
    assert by_offset[1]["value.dropped"].startswith(b"not a JSON object")
    assert by_offset[3]["unknown.removed"] == sha256(mark(4).encode()).hexdigest()[:12].encode()
    assert by_offset[6]["key.sha256"] == sha256(mark(7).encode()).hexdigest().encode()
    assert trigger.stats["landed"] == 2  # the PII value stripped, the escaped PII key stripped too


def test_duplicate_keys_and_unprintable_event_ids_are_dead_lettered_with_a_clear_reason(
    kafka_settings: Settings,
) -> None:
    base = events(8, 32)
    good = json.dumps(base[0]).encode()
    duplicate = json.dumps(base[1]).replace('"event_id"', '"company_age_years": 1, "event_id"', 1).encode()
    assert b'"company_age_years"' in duplicate.split(b'"event_id"')[1]  # the key twice
    ids = {"nul\x00": 2, "line\nbreak": 3, "tab\there": 4, "x" * 201: 5, "bidi\u2028": 6}
    values = [good, duplicate, *(json.dumps(base[i] | {"event_id": e}).encode() for e, i in ids.items())]
    ensure_topics(kafka_settings, [MODEL])
    produce(kafka_settings, SPEC.source_topic, [(None, v, []) for v in values])
    trigger = Trigger(kafka_settings, [MODEL], launcher=Launches())
    run_for(trigger)
    assert [r["event_id"] for r in landed_rows(kafka_settings, MODEL)] == [base[0]["event_id"]]
    reasons = {int(dict(r.headers)["source.offset"]): dict(r.headers) for r in letters_of(kafka_settings)}
    assert reasons[1]["error.field"] == b"company_age_years"
    assert reasons[1]["error.reason"] == b"duplicate key in a JSON object: ambiguous, refused"
    for offset in range(2, 7):
        assert reasons[offset]["error.field"] == b"event_id"
        assert b"printable string of 1 to 200 characters" in reasons[offset]["error.reason"]
    assert trigger.stats["rejected"] == 6


def test_a_dead_letter_too_large_for_the_broker_keeps_its_reason_and_is_sent_once(kafka_settings: Settings) -> None:
    admin = KafkaAdminClient(**kafka_settings.kafka_options())  # an operator gave the DLQ a small size limit
    admin.create_topics(
        [NewTopic(named(dlq(SPEC.source_topic), kafka_settings), 3, 1, topic_configs={"max.message.bytes": "4000"})]
    )
    admin.close()
    ensure_topics(kafka_settings, [MODEL])
    base = events(20, 33)
    big_key = json.dumps(base[0] | {"company_age_years": "old"}).encode()
    random_note = os.urandom(8000).hex()  # 16 KB that gzip shrinks by half at most
    big_value = json.dumps(base[1] | {"event_id": "big-value", "company_age_years": random_note}).encode()
    small = [json.dumps(base[i] | {"company_age_years": "old"}).encode() for i in range(2, 6)]
    records: list[Record] = [(b"k" * (1 << 20), big_key, []), (None, big_value, []), *((None, v, []) for v in small)]
    records += [(None, json.dumps(e).encode(), []) for e in base[6:]]
    produce(kafka_settings, SPEC.source_topic, records, max_request_size=4 << 20, compression_type="gzip")
    settings = kafka_settings.model_copy(update={"kafka_retry_max_s": 0.5})
    trigger = Trigger(settings, [MODEL], launcher=Launches())
    run_for(trigger)
    assert uncommitted(settings, SPEC.source_topic) == 0 and trigger.stats["poison"] == 0
    letters = letters_of(settings)
    offsets = [int(dict(r.headers)["source.offset"]) for r in letters]
    assert sorted(offsets) == [0, 1, 2, 3, 4, 5]  # each once
    by_offset = {int(dict(r.headers)["source.offset"]): (r, dict(r.headers)) for r in letters}
    letter, headers = by_offset[0]
    assert headers["error.field"] == b"company_age_years" and headers["key.sha256"] == letter.key
    assert letter.key == sha256(b"k" * (1 << 20)).hexdigest().encode()
    letter, headers = by_offset[1]
    assert headers["error.field"] == b"company_age_years" and headers["error.reason"]
    copy = scrub(big_value, SPEC)[0]  # the PII fields out, then cut to fit: the DLQ's limit
    assert int(headers["value.truncated"]) == len(copy) and letter.value == copy[:1024]
    assert headers["value.sha256"] == sha256(copy).hexdigest().encode()
    assert trigger.stats["rejected"] == 6 and trigger.stats["landed"] == 14
