"""Retrain requests without a ``request_id``, against the real broker: the same model and reason
within the cooldown start one training."""

from __future__ import annotations

import json

import pytest

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.publish import publish_events
from pipelines.streaming.topics import RETRAIN_REQUESTS, ensure_topics
from pipelines.streaming.trigger.loop import Trigger
from tests.pipelines.streaming.trigger.test_kafka_trigger import Launches
from tests.pipelines.streaming.trigger.test_trigger_undecodable import produce

pytestmark = pytest.mark.integration
MODEL = "credit_risk"


def test_requests_without_an_id_for_one_model_and_reason_start_one_training(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [MODEL])
    publish_events(
        MODEL, to_events(generate(MODEL, load_spec(MODEL).retrain.min_rows, seed=51), seed=51), kafka_settings
    )
    drift = json.dumps({"model": MODEL, "reason": "drift on avg_days_to_pay"}).encode()
    other = json.dumps({"model": MODEL, "reason": "accuracy below the floor"}).encode()
    with_id = json.dumps({"model": MODEL, "reason": "drift on avg_days_to_pay", "request_id": "r-1"}).encode()
    requests = [(None, v, []) for v in (drift, drift, other, drift, with_id)]
    produce(kafka_settings, RETRAIN_REQUESTS, requests[:2], partition=0)
    produce(kafka_settings, RETRAIN_REQUESTS, requests[2:], partition=1)  # another partition: maybe another replica
    launches = Launches()
    Trigger(kafka_settings, [MODEL], launcher=launches).run(exit_when_idle_s=2)
    keys = sorted(key for _, key in launches.calls)
    assert len(keys) == 3, keys  # drift once, the other reason once, the request with an id once
    assert f"{MODEL}-request-r-1" in keys
    again = Launches()  # the same requests read again (a new group member): nothing more
    Trigger(
        kafka_settings.model_copy(update={"trigger_group": kafka_settings.trigger_group + "-2"}),
        [MODEL],
        launcher=again,
    ).run(exit_when_idle_s=2)
    assert again.calls == []
