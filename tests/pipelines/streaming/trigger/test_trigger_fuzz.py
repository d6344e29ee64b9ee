"""Property-based fuzz of the trigger's readers: arbitrary bytes and arbitrary JSON never raise out
of the intake decoder or the retrain-request reader, and every record ends landed or dead-lettered
(in-process, then a mutated corpus through the real broker)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.intake.dead_letters import scrub
from pipelines.streaming.intake.validation import Intake
from pipelines.streaming.retraining.requests import BadRequest, RetrainRequest, parse_retrain_request
from pipelines.streaming.topics import RETRAIN_REQUESTS, dlq, ensure_topics
from pipelines.streaming.trigger.loop import Trigger
from tests.pipelines.streaming.trigger.test_kafka_trigger import (
    Launches,
    landed_rows,
    read_topic,
    send_raw,
    uncommitted,
)

SPEC = load_spec("credit_risk")
INTAKE = Intake(SPEC, max_event_bytes=4096)
VALID = to_events(generate("credit_risk", 50, seed=8), seed=8)
NAMES = [*VALID[0], "event_id", "occurred_at", "note"]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)
# events that look like ours: real field names, any values (also the valid ones), sometimes extra fields
events = st.builds(
    lambda base, changes, extra: {**base, **changes, **extra},
    st.sampled_from(VALID),
    st.dictionaries(st.sampled_from(NAMES), json_values | st.sampled_from([v for e in VALID[:3] for v in e.values()])),
    st.dictionaries(st.text(max_size=5), json_values, max_size=1),
)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def check_split(values: list[bytes]) -> None:
    good, rejects = INTAKE.split(values)
    indexes = [i for i, _ in good] + [r.index for r in rejects]
    assert sorted(indexes) == list(range(len(values)))  # each record: landed or refused, once
    table = INTAKE.table([event for _, event in good], "2026-01-01T00:00:00+00:00")  # what passes is landable
    assert len(INTAKE.digests(table)) == len(good)
    for reject in rejects:
        reject.reason.encode("utf-8", "backslashreplace")
        scrub(values[reject.index], SPEC)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise_out_of_the_intake(values: list[bytes]) -> None:
    check_split(values)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events | json_values, max_size=8))
def test_arbitrary_json_never_raises_out_of_the_intake(values: list[Any]) -> None:
    check_split([encode(v) for v in values])


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.binary(max_size=200)
    | json_values.map(encode)
    | st.dictionaries(st.sampled_from(["model", "reason", "request_id"]), json_values | st.just("credit_risk")).map(
        encode
    )
)
def test_arbitrary_retrain_requests_parse_or_are_refused(raw: bytes) -> None:
    try:
        request = parse_retrain_request(raw, {"credit_risk"})
    except BadRequest as exc:
        str(exc).encode()  # a printable reason
        return
    assert isinstance(request, RetrainRequest) and request.model == "credit_risk"
    f"{request.reason}{request.request_id}".encode()  # storable, loggable


def mutated_corpus(n: int, seed: int) -> list[bytes]:
    """Valid events broken in the ways a fuzzer finds: truncated, bit-flipped, retyped, nested,
    surrogates, huge, duplicated with other content; about half stay valid."""
    rng = random.Random(seed)
    base = to_events(generate("credit_risk", n, seed=seed), seed=seed)
    corpus = []
    for i, event in enumerate(base):
        raw = json.dumps(event).encode()
        kind = rng.randrange(10)
        if kind == 0:
            raw = raw[: rng.randrange(len(raw))]
        elif kind == 1:
            data = bytearray(raw)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            raw = bytes(data)
        elif kind == 2:
            field = rng.choice(list(event))
            raw = json.dumps(event | {field: rng.choice([None, [], {}, "x", -1e308, True, "\U0001f600"])}).encode()
        elif kind == 3:
            raw = (
                b"[" * 5000 + b"]" * 5000
                if rng.random() < 0.5
                else raw.replace(b'"event_id": "', b'"event_id": "\\ud800')
            )
        elif kind == 4:
            raw = json.dumps(base[i - 1] | {"active_projects": 999_999}).encode()  # an earlier id, other content
        elif kind == 5:
            raw = json.dumps(event | {"note": "z" * 5000}).encode()
        corpus.append(raw)
    return corpus


@pytest.mark.integration
def test_a_fuzzed_corpus_through_the_broker_is_landed_or_dead_lettered_each(kafka_settings: Settings) -> None:
    corpus = mutated_corpus(600, seed=13)
    ensure_topics(kafka_settings, ["credit_risk"])
    send_raw(kafka_settings, SPEC.source_topic, corpus)
    send_raw(kafka_settings, RETRAIN_REQUESTS, corpus[:50])
    trigger = Trigger(kafka_settings, ["credit_risk"], launcher=Launches())
    trigger.run(exit_when_idle_s=2)
    landed = len(landed_rows(kafka_settings, "credit_risk"))
    dead = {
        (int(dict(r.headers)["source.partition"]), int(dict(r.headers)["source.offset"]))
        for r in read_topic(kafka_settings, dlq(SPEC.source_topic))
    }
    assert trigger.stats["landed"] == landed > 200 and len(dead) == trigger.stats["rejected"] > 100
    assert landed + len(dead) + trigger.stats["duplicates"] == len(corpus)  # none lost
    assert uncommitted(kafka_settings, SPEC.source_topic) == 0 and uncommitted(kafka_settings, RETRAIN_REQUESTS) == 0
    assert trigger.stats["poison"] == 0
