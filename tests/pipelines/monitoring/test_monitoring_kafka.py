"""The monitoring service on a real broker: payload-logger CloudEvents over HTTP become
inference-log records on Kafka, which its consumer reads back and joins with published outcomes;
a retrain request reaches the topic the trigger reads."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from feature_specs import load_spec
from feature_specs.synthetic import generate
from pipelines.monitoring.live_accuracy import outcome_event
from pipelines.monitoring.outcomes import publish_outcomes
from pipelines.monitoring.payload_log import REQUEST_TYPE, RESPONSE_TYPE
from pipelines.monitoring.service import MonitoringService, MonitoringSettings, RetrainRequests, create_monitoring_app
from pipelines.settings import Settings
from pipelines.streaming.topics import INFERENCE_LOG, MODEL_EVENTS, RETRAIN_REQUESTS, ensure_topics, named

pytestmark = pytest.mark.integration
SPEC = load_spec("credit_risk")


def raw_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Rows as a client sends them: JSON types, null where a value is missing."""
    cast = {"bool": bool, "int": int, "float": float, "category": str}
    return {f.name: [None if pd.isna(v) else cast[f.dtype](v) for v in frame[f.name].tolist()] for f in SPEC.features}


def v2_request(request_id: str, rows: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [
            {"name": f.name, "shape": [len(rows[f.name])], "datatype": f.v2_datatype, "data": rows[f.name]}
            for f in SPEC.features
        ],
    }


def read_all(settings: Settings, topic: str, expected: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        named(topic, settings), **settings.kafka_options(), auto_offset_reset="earliest", group_id=uuid.uuid4().hex
    )
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                found += [json.loads(r.value) for r in records]
    finally:
        consumer.close()
    return found


def wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(condition)
        time.sleep(0.2)


@pytest.fixture
def service(kafka_settings: Settings) -> Iterator[MonitoringService]:
    settings = MonitoringSettings(**kafka_settings.model_dump(), monitoring_models=["credit_risk"])
    settings = settings.model_copy(update={"monitoring_group": f"monitoring-{uuid.uuid4().hex[:8]}"})
    ensure_topics(settings, ["credit_risk"])
    service = MonitoringService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    yield service
    service.stop()
    thread.join(timeout=30)


def test_payload_logger_events_reach_the_inference_log_and_join_outcomes(
    service: MonitoringService, kafka_settings: Settings
) -> None:
    rows = raw_columns(generate("credit_risk", 3, seed=1).frame)
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    response = {
        "id": request_id,
        "model_name": "credit_risk",
        "model_version": "5",
        "outputs": [{"name": "probability", "shape": [3], "datatype": "FP64", "data": [0.1, 0.5, 0.9]}],
    }
    headers = {"ce-id": "ev-1", "ce-inferenceservicename": "credit-risk", "ce-endpoint": "default"}
    with TestClient(create_monitoring_app(service)) as http:
        first = http.post("/events", json=response, headers=headers | {"ce-type": RESPONSE_TYPE})
        second = http.post("/events", json=v2_request(request_id, rows), headers=headers | {"ce-type": REQUEST_TYPE})
        bad = http.post("/events", content=b"[]", headers=headers | {"ce-id": "ev-2", "ce-type": REQUEST_TYPE})
        assert (first.json(), second.json()) == ({"result": "pending"}, {"result": "published"})
        assert bad.json()["result"].startswith("refused")
        [record] = read_all(kafka_settings, INFERENCE_LOG, 1)
        assert record["request_id"] == request_id and record["model_version"] == "5"
        assert record["inputs"]["company_age_years"] == rows["company_age_years"]
        assert record["outputs"]["probability"] == [0.1, 0.5, 0.9]

        wait_for(lambda: len(service.monitor.store) == 3)  # consumed back from Kafka
        joined = ("constructos_outcomes_total", {"model": "credit_risk", "result": "joined"})
        before = REGISTRY.get_sample_value(*joined) or 0.0
        outcomes = [outcome_event("credit_risk", request_id, flag, row=i) for i, flag in enumerate([False, True])]
        publish_outcomes("credit_risk", outcomes, kafka_settings)
        wait_for(lambda: (REGISTRY.get_sample_value(*joined) or 0.0) - before == 2)
        labels = ("constructos_live_labels", {"model": "credit_risk", "version": "5", "role": "champion"})
        assert REGISTRY.get_sample_value(*labels) == 2
        assert 'constructos_outcomes_total{model="credit_risk",result="joined"}' in http.get("/metrics").text
        assert http.get("/healthz").json() == {"consuming": True}
    with pytest.raises(ValueError, match="actual"):
        publish_outcomes("credit_risk", [outcome_event("credit_risk", request_id, 0.3)], kafka_settings)


def test_retrain_requests_use_the_trigger_format_and_are_reported(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, ["credit_risk"])
    send = RetrainRequests(kafka_settings)
    send("credit_risk", "drift", "avg_days_to_pay psi=0.9>0.2", {"version": "3"})
    send.close()
    [request] = read_all(kafka_settings, RETRAIN_REQUESTS, 1)
    assert request["model"] == "credit_risk" and request["request_id"].startswith("monitoring-drift-")
    assert request["reason"] == "drift: avg_days_to_pay psi=0.9>0.2"
    [event] = read_all(kafka_settings, MODEL_EVENTS, 1)
    assert (event["type"], event["request_id"], event["version"]) == ("drift.detected", request["request_id"], "3")
