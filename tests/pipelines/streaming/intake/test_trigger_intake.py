"""The trigger's intake policy, in-process: what lands, what is dead-lettered and why."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.streaming.intake.validation import Intake

SPEC = load_spec("credit_risk")


def raw(event: Any) -> bytes:
    return json.dumps(event).encode()


@pytest.fixture
def intake() -> Intake:
    return Intake(SPEC, max_event_bytes=4096)


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return to_events(generate("credit_risk", 200, seed=3), seed=3)


def test_synthetic_events_all_pass_and_pii_never_reaches_the_table(intake: Intake, events: list[dict]) -> None:
    assert set(SPEC.pii_names) <= set(events[0])  # the generator does send PII
    good, rejects = intake.split([raw(e) for e in events])
    assert rejects == []
    assert [i for i, _ in good] == list(range(200))
    table = intake.table([e for _, e in good], "2026-01-01T00:00:00+00:00")
    assert table.column_names == ["event_id", "occurred_at", "landed_at", *SPEC.feature_names, SPEC.target.name]
    assert not set(SPEC.pii_names) & set(table.column_names)
    assert table.column("event_id").to_pylist() == [e["event_id"] for e in events]


def test_values_are_landed_as_sent_nulls_stay_null(intake: Intake, events: list[dict]) -> None:
    event = events[0] | {"annual_revenue_eur": None, "contract_type": None, "retention_held": None}
    event.pop("credit_utilisation")  # an absent optional feature is a null too
    event["active_projects"] = 3.0  # an integral float is accepted for an int feature
    good, rejects = intake.split([raw(event)])
    assert rejects == []
    row = intake.table([good[0][1]], "t").to_pylist()[0]
    assert row["annual_revenue_eur"] is None  # not imputed: training imputes
    assert row["contract_type"] is None and row["retention_held"] is None and row["credit_utilisation"] is None
    assert row["active_projects"] == 3 and intake.schema.field("active_projects").type == pa.int64()
    assert row[SPEC.target.name] is event[SPEC.target.name]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"company_age_years": "twelve"}, "company_age_years", "expected a number"),
        ({"late_payment_ratio_12m": 1.5}, "late_payment_ratio_12m", "above the maximum"),
        ({"industry_segment": "bakery"}, "industry_segment", "unknown category"),
        ({"active_projects": 2.5}, "active_projects", "expected an integer"),
        ({"avg_days_to_pay": None}, "avg_days_to_pay", "required"),
        ({"customer_email": "anna@example.com"}, "unknown_field", "not in the spec"),  # a name is never shown
        ({"defaulted_90d": "yes"}, "defaulted_90d", "expected true or false"),
        ({"defaulted_90d": None}, "defaulted_90d", "target is missing"),
        ({"event_id": 17}, "event_id", "expected a printable string"),
        ({"occurred_at": "yesterday"}, "occurred_at", "ISO-8601"),
    ],
)
def test_a_bad_event_is_rejected_naming_the_field_and_the_rest_pass(
    intake: Intake, events: list[dict], change: dict, field: str, reason: str
) -> None:
    values = [raw(e) for e in events]
    values[137] = raw(events[137] | change)
    good, rejects = intake.split(values)
    assert [(r.index, r.field) for r in rejects] == [(137, field)]
    assert reason in rejects[0].reason
    assert len(good) == 199 and 137 not in {i for i, _ in good}


def test_messages_that_are_not_events(intake: Intake, events: list[dict]) -> None:
    oversized = raw(events[1] | {"customer_name": "x" * 5000})
    values = [b"{not json", b"[1, 2]", None, b"\xff\xfe", oversized, raw(events[0])]
    good, rejects = intake.split(values)
    assert [i for i, _ in good] == [5]
    assert [(r.index, r.field) for r in rejects] == [(i, "event") for i in range(5)]
    assert "oversized" in rejects[4].reason and "not valid JSON" in rejects[0].reason


def test_many_bad_events_in_one_batch_are_all_found(intake: Intake, events: list[dict]) -> None:
    bad = {3, 4, 50, 51, 52, 199}
    values = [raw(e | {"company_age_years": -1.0}) if i in bad else raw(e) for i, e in enumerate(events)]
    good, rejects = intake.split(values)
    assert {r.index for r in rejects} == bad
    assert all(r.field == "company_age_years" for r in rejects)
    assert len(good) == 200 - len(bad)


def test_regression_target_must_be_a_number_within_bounds() -> None:
    spec = load_spec("stock_demand")
    intake = Intake(spec, 4096)
    event = to_events(generate("stock_demand", 1, seed=1))[0]
    target = spec.target.name
    cases = {"12": "finite number", True: "finite number", -5: "below the minimum", float("inf"): "finite number"}
    for value, reason in cases.items():
        good, rejects = intake.split([json.dumps(event | {target: value}).encode()])
        assert not good and reason in rejects[0].reason, value
    good, _ = intake.split([raw(event | {target: 40})])
    assert len(good) == 1
