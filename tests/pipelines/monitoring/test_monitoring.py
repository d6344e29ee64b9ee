"""The monitoring logic in-process (no broker): payload-logger joins, drift windows, live accuracy,
outcome parsing, the prediction store and the retrain cool-down."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from feature_specs import Validator, load_spec
from feature_specs.reference import build_reference
from feature_specs.synthetic import generate
from pipelines.monitoring.live_accuracy import OutcomeEvent, PredictionStore, breaches, outcome_event, parse_outcome
from pipelines.monitoring.monitor import Monitor, MonitoringSettings
from pipelines.monitoring.payload_log import REQUEST_TYPE, RESPONSE_TYPE, PayloadError, PayloadJoiner
from tests.pipelines.monitoring.test_drift import columns, shifted

SPEC = load_spec("credit_risk")


# -- payload logger ---------------------------------------------------------------------------


def headers(kind: str, event_id: str = "ev-1", endpoint: str = "default") -> dict[str, str]:
    return {
        "ce-id": event_id,
        "ce-type": kind,
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": "credit-risk",
        "ce-endpoint": endpoint,
    }


V2_REQUEST = {
    "id": "req-7",
    "inputs": [{"name": "company_age_years", "shape": [2], "datatype": "FP64", "data": [3, 4]}],
}
V2_RESPONSE = {
    "id": "req-7",
    "model_name": "credit_risk",
    "model_version": "3",
    "outputs": [{"name": "probability", "shape": [2], "datatype": "FP64", "data": [0.1, 0.9]}],
}


@pytest.mark.parametrize("response_first", [False, True])
def test_v2_request_and_response_are_joined_by_ce_id_in_either_order(response_first: bool) -> None:
    joiner = PayloadJoiner()
    halves = [(REQUEST_TYPE, V2_REQUEST), (RESPONSE_TYPE, V2_RESPONSE)]
    first, second = halves[::-1] if response_first else halves
    assert joiner.add(headers(first[0]), json.dumps(first[1]).encode()) is None
    assert joiner.pending == 1
    record = joiner.add(headers(second[0]), json.dumps(second[1]).encode())
    assert joiner.pending == 0
    assert record is not None
    assert {k: record[k] for k in ("request_id", "model", "model_version", "role")} == {
        "request_id": "req-7",
        "model": "credit_risk",
        "model_version": "3",
        "role": "champion",
    }
    assert record["inputs"] == {"company_age_years": [3, 4]}
    assert record["outputs"] == {"probability": [0.1, 0.9]}


def test_v1_bodies_and_the_canary_endpoint() -> None:
    joiner = PayloadJoiner()
    request = {"instances": [{"company_age_years": 3}, {"company_age_years": 5, "active_projects": 2}]}
    response = {
        "model_name": "credit_risk",
        "model_version": "4",
        "predictions": [{"probability": 0.2, "label": False}] * 2,
    }
    assert joiner.add(headers(REQUEST_TYPE, "a", "canary"), json.dumps(request).encode()) is None
    record = joiner.add(headers(RESPONSE_TYPE, "a", "canary"), json.dumps(response).encode())
    assert record is not None
    assert record["request_id"] == "a" and record["role"] == "challenger" and record["model_version"] == "4"
    assert record["inputs"] == {"company_age_years": [3, 5], "active_projects": [None, 2]}
    assert record["outputs"]["probability"] == [0.2, 0.2]


def test_error_responses_and_bad_events_are_refused_and_pending_halves_are_bounded() -> None:
    joiner = PayloadJoiner(max_pending=2)
    joiner.add(headers(REQUEST_TYPE, "x"), json.dumps(V2_REQUEST).encode())
    with pytest.raises(PayloadError, match="no outputs"):
        joiner.add(headers(RESPONSE_TYPE, "x"), b'{"error": "company_age_years: missing"}')
    with pytest.raises(PayloadError, match="ce-type"):
        joiner.add(headers("dev.knative.other"), b"{}")
    with pytest.raises(PayloadError, match="JSON"):
        joiner.add(headers(REQUEST_TYPE, "y"), b"not json")
    for i in range(5):
        joiner.add(headers(REQUEST_TYPE, f"r{i}"), json.dumps(V2_REQUEST).encode())
    assert joiner.pending == 2  # the oldest halves were dropped
    assert joiner.add(headers(RESPONSE_TYPE, "r0"), json.dumps(V2_RESPONSE).encode()) is None
    assert joiner.add(headers(RESPONSE_TYPE, "r4"), json.dumps(V2_RESPONSE).encode()) is not None


# -- outcomes and the prediction store ----------------------------------------------------------


def test_outcome_events_are_checked() -> None:
    good = outcome_event("credit_risk", "req-1", True, row=2)
    assert parse_outcome(json.dumps(good), SPEC) == OutcomeEvent(good["event_id"], "credit_risk", "req-1", 1.0, 2)
    for change, problem in [
        ({"actual": 1}, "actual: a boolean"),
        ({"model": "lead_score"}, "model"),
        ({"request_id": ""}, "request_id"),
        ({"row": -1}, "row"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_outcome(json.dumps(good | change), SPEC)
    demand = load_spec("stock_demand")
    assert parse_outcome(json.dumps(outcome_event("stock_demand", "r", 12.5)), demand).actual == 12.5
    with pytest.raises(ValueError, match="finite number"):
        parse_outcome(json.dumps(outcome_event("stock_demand", "r", True)), demand)


def test_prediction_store_labels_once_and_evicts_the_oldest(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "p.db", max_rows=4)
    store.add("credit_risk", "a", "1", "champion", [0.1, 0.2])
    store.add("credit_risk", "a", "2", "challenger", [0.3, 0.4])
    first = store.label(OutcomeEvent("e1", "credit_risk", "a", 1.0, row=1))
    assert sorted((x.version, x.role, x.score) for x in first) == [("1", "champion", 0.2), ("2", "challenger", 0.4)]
    assert store.label(OutcomeEvent("e1", "credit_risk", "a", 1.0, row=1)) == []  # a replay is not counted twice
    store.add("credit_risk", "b", "1", "champion", [0.5, 0.6])
    assert len(store) == 4
    evicted = store.label(OutcomeEvent("e2", "credit_risk", "a", 0.0, row=0))
    assert [(x.version, x.score) for x in evicted] == [("2", 0.3)]  # version 1's rows were the oldest
    assert len(store.label(OutcomeEvent("e3", "credit_risk", "b", 0.0, row=0))) == 1
    store.close()
    assert len(PredictionStore(tmp_path / "p.db")) == 4  # survives a restart


def test_breaches_name_the_floors_and_ceilings_broken() -> None:
    assert breaches(SPEC, {"roc_auc": 0.9, "pr_auc": 0.5, "brier": 0.1}) == []
    assert breaches(SPEC, {"roc_auc": 0.6, "pr_auc": 0.5, "brier": 0.2}) == [
        "live roc_auc 0.6000 < floor 0.72",
        "live brier 0.2000 > ceiling 0.15",
    ]


# -- the monitor --------------------------------------------------------------------------------


class Requests:
    """Collects retrain requests (the real sender is covered with the broker in test_closed_loop)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def __call__(self, model: str, kind: str, reason: str, details: dict[str, Any]) -> None:
        self.sent.append((model, kind, reason, details))


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data = generate("credit_risk", 4000, seed=1)
    return build_reference(SPEC, Validator(SPEC, max_batch=4000).frame(data.frame[SPEC.feature_names]), data.truth)


def make_monitor(
    tmp_path: Path, reference: dict[str, Any], now: list[float], **settings: Any
) -> tuple[Monitor, Requests]:
    options = {"data_dir": tmp_path, "monitoring_models": ["credit_risk"], "monitoring_window": 300} | settings
    requests = Requests()
    monitor = Monitor(MonitoringSettings(**options), lambda m, v: reference, requests, clock=lambda: now[0])
    return monitor, requests


def records(frame: Any, version: str, scores: np.ndarray, batch: int = 50) -> list[dict[str, Any]]:
    cols = columns(frame)
    out = []
    for start in range(0, len(frame), batch):
        out.append(
            {
                "request_id": uuid.uuid4().hex,
                "model": "credit_risk",
                "model_version": version,
                "role": "champion",
                "inputs": {k: v[start : start + batch] for k, v in cols.items()},
                "outputs": {"probability": scores[start : start + batch].tolist()},
            }
        )
    return out


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_drifted_window_requests_one_retrain_per_cooldown(tmp_path: Path, reference: dict[str, Any]) -> None:
    now = [1000.0]
    monitor, requests = make_monitor(tmp_path, reference, now, monitoring_cooldown_s=3600)
    version = f"drift-{uuid.uuid4().hex[:6]}"
    calm = generate("credit_risk", 300, seed=2)
    for record in records(calm.frame, version, calm.truth):
        monitor.on_record(record)
    assert requests.sent == []
    assert gauge("constructos_drift_detected", model="credit_risk", version=version) == 0
    assert gauge("constructos_feature_drift", model="credit_risk", version=version, feature="avg_days_to_pay",
                 method="psi") < 0.1  # fmt: skip
    for seed in (3, 4):  # two drifted windows within the cool-down: one request
        for record in records(shifted(seed, 300), version, calm.truth):
            monitor.on_record(record)
    assert [(m, kind) for m, kind, _, _ in requests.sent] == [("credit_risk", "drift")]
    assert set(requests.sent[0][3]["features"]) == {"avg_days_to_pay", "industry_segment"}
    assert gauge("constructos_drift_detected", model="credit_risk", version=version) == 1
    assert gauge("constructos_feature_drift", model="credit_risk", version=version, feature="industry_segment",
                 method="js") > SPEC.drift.js_threshold  # fmt: skip
    now[0] += 3601
    for record in records(shifted(5, 300), version, calm.truth):
        monitor.on_record(record)
    assert len(requests.sent) == 2
    monitor.close()
    restarted, again = make_monitor(tmp_path, reference, now, monitoring_cooldown_s=3600)
    for record in records(shifted(6, 300), version, calm.truth):
        restarted.on_record(record)
    assert again.sent == []  # the cool-down clock survives a restart


def test_shadow_rows_are_stored_but_do_not_feed_drift(tmp_path: Path, reference: dict[str, Any]) -> None:
    monitor, requests = make_monitor(tmp_path, reference, [0.0])
    frame = shifted(7, 600)
    for record in records(frame, "9", np.full(600, 0.5)):
        monitor.on_record(record | {"role": "challenger"})
    assert requests.sent == [] and monitor.windows.pending("credit_risk", "9") == 0
    assert len(monitor.store) == 600


def test_live_accuracy_below_the_floor_requests_a_retrain(tmp_path: Path, reference: dict[str, Any]) -> None:
    monitor, requests = make_monitor(tmp_path, reference, [0.0], monitoring_min_labels=200, monitoring_window=10_000)
    data = generate("credit_risk", 400, seed=8)
    version = f"acc-{uuid.uuid4().hex[:6]}"
    noise = np.random.default_rng(0).random(400)
    good = records(data.frame, version, data.truth)
    shadow = [  # the same requests scored by a shadow version that guesses
        r
        | {
            "model_version": version + "b",
            "role": "challenger",
            "outputs": {"probability": noise[i * 50 : i * 50 + 50].tolist()},
        }
        for i, r in enumerate(good)
    ]
    for record in good + shadow:
        monitor.on_record(record)
    labels = data.frame[SPEC.target.name].to_numpy()
    events = [
        json.dumps(outcome_event("credit_risk", r["request_id"], bool(labels[i * 50 + row]), row=row)).encode()
        for i, r in enumerate(good)
        for row in range(50)
    ]
    monitor.on_outcomes("credit_risk", events[:100])  # too few labels to judge
    monitor.on_outcomes("credit_risk", [*events[100:], b"{}", events[0]])  # + an invalid one and a replay
    champion_auc = gauge("constructos_live_metric", model="credit_risk", version=version, role="champion",
                         metric="roc_auc")  # fmt: skip
    challenger_auc = gauge("constructos_live_metric", model="credit_risk", version=version + "b", role="challenger",
                           metric="roc_auc")  # fmt: skip
    assert champion_auc is not None and champion_auc > 0.75  # the truth itself scores well
    assert challenger_auc is not None and abs(challenger_auc - 0.5) < 0.15  # noise scores like a coin
    assert gauge("constructos_live_labels", model="credit_risk", version=version, role="champion") == 400
    assert requests.sent == []  # the champion is fine; a bad shadow is the canary's business

    worse = records(data.frame, version + "c", 1 - data.truth)  # a champion that ranks backwards
    for record in worse:
        monitor.on_record(record)
    monitor.on_outcomes(
        "credit_risk",
        [
            json.dumps(outcome_event("credit_risk", r["request_id"], bool(labels[i * 50 + row]), row=row)).encode()
            for i, r in enumerate(worse)
            for row in range(50)
        ],
    )
    assert [(m, kind) for m, kind, _, _ in requests.sent] == [("credit_risk", "accuracy")]
    assert "roc_auc" in requests.sent[0][2] and "< floor 0.72" in requests.sent[0][2]


def test_every_metric_on_the_grafana_dashboard_is_exported() -> None:
    import re

    import kserve.metrics  # noqa: F401  (KServe's latency histograms)

    import predictors.observability.metrics  # noqa: F401

    root = Path(__file__).resolve().parents[3]
    dashboard = json.loads((root / "manifests/base/platform/grafana/constructos-ml.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(total|bucket)$", "", m) for q in queries for m in re.findall(r"\b(?:constructos|request)_\w+", q)
    }
    exported = {m.name for m in REGISTRY.collect()}
    assert len(used) >= 15 and used <= exported, sorted(used - exported)
