"""Hostile and unlucky input against the real broker: the trigger never crashes, stalls, loses,
duplicates or leaks (regressions of records that once crash-looped or stalled it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from hashlib import sha256
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.intake.dead_letters import scrub
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import MODEL_EVENTS, RETRAIN_REQUESTS, dlq, ensure_topics, named
from pipelines.streaming.trigger.loop import Trigger
from tests.pipelines.streaming.trigger.test_kafka_trigger import Launches, landed_rows, read_topic, uncommitted

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
SPEC = load_spec(MODEL)
NESTED = b"[" * 100_000 + b"]" * 100_000


def send(settings: Settings, topic: str, values: Sequence[bytes], **options: Any) -> None:
    producer = KafkaProducer(**settings.kafka_options(), max_request_size=8 << 20, **options)
    for i, value in enumerate(values):
        producer.send(named(topic, settings), key=f"k{i}".encode(), value=value).get(30)
    producer.close()


def run_trigger(settings: Settings, launcher: Any = None) -> Trigger:
    trigger = Trigger(settings, [MODEL], launcher=launcher or Launches())
    trigger.run(exit_when_idle_s=2)
    return trigger


def events(n: int, seed: int) -> list[dict[str, Any]]:
    return to_events(generate(MODEL, n, seed=seed), seed=seed)


def letters_by_reason(settings: Settings) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for letter in read_topic(settings, dlq(SPEC.source_topic)):
        found.setdefault(dict(letter.headers)["error.reason"].decode(), []).append(letter)
    return found


def test_deeply_nested_json_is_dead_lettered_not_a_crash_loop(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [MODEL])
    good = events(50, 1)
    nested_field = json.dumps(good[0] | {"event_id": "nested-field"}).replace('"cost_plus"', "X")
    nested_field = nested_field.replace("X", "[" * 900 + "]" * 900).replace('"fixed_price"', "[" * 900 + "]" * 900)
    send(kafka_settings, SPEC.source_topic, [NESTED, nested_field.encode(), *(json.dumps(e).encode() for e in good)])
    send(kafka_settings, RETRAIN_REQUESTS, [NESTED, b'{"model": ' + NESTED + b"}"])
    trigger = run_trigger(kafka_settings)
    assert {r["event_id"] for r in landed_rows(kafka_settings, MODEL)} == {e["event_id"] for e in good}
    assert trigger.stats["rejected"] == 2 and uncommitted(kafka_settings, SPEC.source_topic) == 0
    reasons = [json.loads(r.value)["reason"] for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert reasons == ["event: not valid JSON (nested too deeply)"] * 2
    assert uncommitted(kafka_settings, RETRAIN_REQUESTS) == 0


def test_lone_surrogates_are_dead_lettered_naming_the_field(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [MODEL])
    good = events(20, 2)
    lone_id = json.dumps(good[0] | {"event_id": "x"}).replace('"x"', '"ab\\ud800"')
    lone_category = json.dumps(good[1] | {"event_id": "lone-category", "contract_type": "\\udfff"})
    lone_category = lone_category.replace("\\\\udfff", "\\udfff")
    lone_pii = json.dumps(good[2] | {"event_id": "lone-pii", "customer_email": "z"}).replace('"z"', '"\\udc00@x"')
    pair = json.dumps(good[3] | {"event_id": "emoji-\U0001f600"})  # a valid surrogate pair escape lands
    send(kafka_settings, SPEC.source_topic, [v.encode() for v in (lone_id, lone_category, lone_pii, pair)])
    send(kafka_settings, RETRAIN_REQUESTS, [b'{"model": "credit_risk", "request_id": "\\ud800"}'])
    trigger = run_trigger(kafka_settings)
    landed = {r["event_id"] for r in landed_rows(kafka_settings, MODEL)}
    assert landed == {"emoji-\U0001f600"}
    fields = {dict(r.headers)["error.field"].decode() for r in read_topic(kafka_settings, dlq(SPEC.source_topic))}
    assert fields == {"event_id", "contract_type", "unknown_field"}  # customer_email: not in the spec, never named
    assert trigger.stats["rejected"] == 3
    (refused,) = [json.loads(r.value) for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert refused["type"] == "retrain.rejected" and "request_id" in refused["reason"]


def test_an_oversized_compressed_record_is_dead_lettered_truncated_and_nothing_stalls(
    kafka_settings: Settings,
) -> None:
    ensure_topics(kafka_settings, [MODEL])
    good = events(30, 3)
    huge = json.dumps(good[0] | {"event_id": "huge", "contract_type": "x" * (2 << 20)}).encode()  # 2 MiB, gzips to KiBs
    send(
        kafka_settings, SPEC.source_topic, [huge, *(json.dumps(e).encode() for e in good[1:])], compression_type="gzip"
    )
    trigger = run_trigger(kafka_settings)
    assert len(landed_rows(kafka_settings, MODEL)) == 29 and uncommitted(kafka_settings, SPEC.source_topic) == 0
    (letter,) = letters_by_reason(kafka_settings)[f"oversized: {len(huge)} bytes, the limit is 65536"]
    headers = dict(letter.headers)
    copy = scrub(huge, SPEC)[0]
    assert int(headers["value.truncated"]) == len(copy) and headers["value.sha256"] == sha256(copy).hexdigest().encode()
    assert letter.value == copy[: kafka_settings.trigger_dead_letter_max_bytes]
    assert trigger.stats["poison"] == 0


def test_conflicting_duplicates_first_wins_and_the_newcomer_is_dead_lettered(landing_settings: Settings) -> None:
    kafka_settings = landing_settings  # a folder or s3://
    ensure_topics(kafka_settings, [MODEL])
    original = events(10, 4)
    changed = original[0] | {"avg_days_to_pay": original[0]["avg_days_to_pay"] + 7}
    resent = original[1] | {"active_projects": float(original[1]["active_projects"])}  # 3 == 3.0: the same
    send(kafka_settings, SPEC.source_topic, [json.dumps(e).encode() for e in original])
    first = run_trigger(kafka_settings)
    assert first.stats["landed"] == 10
    in_batch = original[2] | {"defaulted_90d": not original[2]["defaulted_90d"]}
    values = [changed, resent, original[3], in_batch, in_batch]
    send(kafka_settings, SPEC.source_topic, [json.dumps(e).encode() for e in values])
    trigger = run_trigger(kafka_settings)
    assert trigger.stats["conflicts"] == 3 and trigger.stats["duplicates"] == 2 and trigger.stats["landed"] == 0
    rows = {r["event_id"]: r for r in landed_rows(kafka_settings, MODEL)}
    assert len(rows) == 10 and rows[changed["event_id"]]["avg_days_to_pay"] == original[0]["avg_days_to_pay"]
    conflicts = letters_by_reason(kafka_settings)["conflicting-duplicate"]
    assert sorted(json.loads(c.value)["event_id"] for c in conflicts) == sorted(
        [changed["event_id"], in_batch["event_id"], in_batch["event_id"]]
    )
    assert {dict(c.headers)["error.field"] for c in conflicts} == {b"event_id"}


def test_a_record_that_cannot_be_dead_lettered_is_skipped_as_poison_after_n_tries(kafka_settings: Settings) -> None:
    admin = KafkaAdminClient(**kafka_settings.kafka_options())  # an operator gave the DLQ an absurd size limit:
    tiny = {"max.message.bytes": "100"}  # not even a copy cut to its headers fits
    admin.create_topics([NewTopic(named(dlq(SPEC.source_topic), kafka_settings), 3, 1, topic_configs=tiny)])
    admin.close()
    ensure_topics(kafka_settings, [MODEL])
    good = events(40, 5)
    bad = [json.dumps(good[i] | {"event_id": f"bad-{i}", "company_age_years": "old"}).encode() for i in (0, 1)]
    send(kafka_settings, SPEC.source_topic, [*bad, *(json.dumps(e).encode() for e in good[2:])])
    settings = kafka_settings.model_copy(update={"kafka_retry_max_s": 0.5, "trigger_dead_letter_attempts": 3})
    trigger = run_trigger(settings)
    assert trigger.stats["poison"] == 2
    # the batch was read three times (once per refusal): each source record is counted once
    assert trigger.stats["rejected"] == 2 and trigger.stats["landed"] == 38 and trigger.stats["duplicates"] == 0
    assert {r["event_id"] for r in landed_rows(settings, MODEL)} == {e["event_id"] for e in good[2:]}
    assert uncommitted(settings, SPEC.source_topic) == 0  # the partitions moved on
    kept = RetrainState(settings.ledger_store).poison()
    assert len(kept) == 2 and {k["topic"] for k in kept} == {named(SPEC.source_topic, settings)}
    assert all("MessageSizeTooLarge" in k["error"] or "RecordTooLarge" in k["error"] for k in kept)
    assert read_topic(settings, dlq(SPEC.source_topic)) == []


def test_pii_values_never_reach_a_log_or_a_dead_letter(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_topics(kafka_settings, [MODEL])
    email = "jane.doe@example.com"
    leak = events(1, 6)[0] | {"event_id": "leak", "customer_name": email, "contract_type": email}
    broken = b'{"event_id": "broken", "customer_name": "' + email.encode() + b'", "oops"'
    send(kafka_settings, SPEC.source_topic, [json.dumps(leak).encode(), broken])
    send(kafka_settings, RETRAIN_REQUESTS, [json.dumps({"model": email}).encode()])
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.INFO, logger="kafka"):  # as the trigger sets them
        run_trigger(kafka_settings)
    assert email not in caplog.text and "rejected 2 to the DLQ" in caplog.text
    letters = {
        json.loads(r.value)["event_id"] if r.value else "broken": r
        for r in read_topic(kafka_settings, dlq(SPEC.source_topic))
    }
    for letter in letters.values():
        assert email.encode() not in letter.value.replace(b'"contract_type": "' + email.encode(), b"")
        assert all(email.encode() not in value for _, value in letter.headers)
    assert b"customer_name" in dict(letters["leak"].headers)["pii.removed"].split(b",")
    assert letters["broken"].value == b"" and "value.dropped" in dict(letters["broken"].headers)
    assert all(email.encode() not in r.value for r in read_topic(kafka_settings, MODEL_EVENTS))


def test_the_sasl_password_never_reaches_the_kafka_clients_debug_log(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-never-logged-5d1f"
    settings = kafka_settings.model_copy(
        update={"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": password}
    )
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        ensure_topics(settings, [MODEL])  # the admin client logs its whole configuration at DEBUG
    assert "Starting KafkaAdminClient with configuration" in caplog.text
    assert password not in caplog.text and "'sasl_plain_password': '***'" in caplog.text
