"""Canary analysis and the ladder (pure), evidence from logs and Prometheus answers, and
(integration) `rollout auto` climbing and rolling back a GitOps overlay rendered by kustomize."""

from __future__ import annotations

import argparse
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_specs import load_spec
from feature_specs.synthetic import generate
from pipelines.monitoring.live_accuracy import outcome_event
from pipelines.rollout import cli as rollout
from pipelines.rollout.canary import (
    Evidence,
    Policy,
    Side,
    Verdict,
    analyze,
    evidence_from_log,
    next_step,
    parse_ladder,
    score_psi,
)
from pipelines.rollout.evidence import bucket_shares, evidence_from_prometheus, promql
from pipelines.rollout.overlay import Overlay
from pipelines.rollout.state import Serving

SPEC = load_spec("credit_risk")
ROOT = Path(__file__).resolve().parents[3]


def evidence(**changes: Any) -> Evidence:
    champion = Side("1", 1000, error_rate=0.001, p99_s=0.010, live=0.80, labels=500)
    challenger = Side("2", 400, error_rate=0.001, p99_s=0.011, live=0.81, labels=300)
    return Evidence(
        Side(**{**vars(champion), **changes.pop("champion", {})}),
        Side(**{**vars(challenger), **changes.pop("challenger", {})}),
        changes.pop("score_psi", 0.02),
    )


def test_a_healthy_challenger_is_promoted_with_every_check_named() -> None:
    verdict = analyze(SPEC, evidence())
    assert verdict.decision == "promote"
    text = "\n".join(verdict.reasons)
    for check in ("error rate", "p99", "live roc_auc", "score shift"):
        assert check in text


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"challenger": {"error_rate": 0.05}}, "error rate 5.00%"),
        ({"challenger": {"p99_s": 0.030}}, "p99 30.0 ms"),
        ({"challenger": {"live": 0.70}}, "live roc_auc 0.7000 vs champion 0.8000"),
        ({"challenger": {"labels": 10}, "score_psi": 0.8}, "score shift PSI 0.800"),
    ],
)
def test_each_failed_check_rolls_back_and_says_why(change: dict[str, Any], failed: str) -> None:
    verdict = analyze(SPEC, evidence(**change))
    assert verdict.decision == "rollback"
    assert any(r.startswith("FAIL") and failed in r for r in verdict.reasons), verdict.reasons


def test_labels_outrank_the_score_shift_and_regression_errors_go_the_other_way() -> None:
    assert analyze(SPEC, evidence(score_psi=0.8)).decision == "promote"  # different but more accurate
    demand = load_spec("stock_demand")  # MAE: lower is better
    better = evidence(champion={"live": 20.0}, challenger={"live": 19.0})
    worse = evidence(champion={"live": 20.0}, challenger={"live": 23.0})
    assert analyze(demand, better).decision == "promote"
    assert analyze(demand, worse).decision == "rollback"


def test_too_little_traffic_or_no_challenger_is_inconclusive() -> None:
    assert analyze(SPEC, evidence(challenger={"rows": 10})).decision == "inconclusive"
    assert analyze(SPEC, evidence(challenger={"version": None})).decision == "inconclusive"
    unmeasured = evidence(champion={"error_rate": None, "p99_s": None}, score_psi=None)
    verdict = analyze(SPEC, unmeasured, Policy(min_rows=100))
    assert verdict.decision == "promote" and "ok p99 latency: not measured" in verdict.reasons


PROMOTE, ROLLBACK, WAIT = (Verdict(d, ()) for d in ("promote", "rollback", "inconclusive"))


def test_the_ladder_climbs_then_promotes() -> None:
    assert next_step(None, PROMOTE, 0, 2) == (next_step(None, PROMOTE, 0, 2)[0], 0)
    assert next_step(None, PROMOTE, 0, 2)[0].percent == 10
    assert next_step(10, PROMOTE, 0, 2)[0].percent == 25
    assert next_step(50, PROMOTE, 0, 2)[0].percent == 100
    assert next_step(100, PROMOTE, 0, 2)[0].action == "promote"
    assert next_step(30, PROMOTE, 0, 2, ladder=(10, 30))[0].action == "promote"


def test_failures_count_up_to_the_limit_and_inconclusive_holds() -> None:
    step, failures = next_step(25, ROLLBACK, 0, 2)
    assert (step.action, step.percent, failures) == ("hold", 25, 1)
    step, failures = next_step(25, WAIT, failures, 2)
    assert (step.action, failures) == ("hold", 1)
    step, failures = next_step(25, ROLLBACK, failures, 2)
    assert (step.action, failures) == ("rollback", 2)


def test_blue_green_is_a_one_rung_ladder_judged_by_the_same_gates() -> None:
    """After ``switch`` the new version has all traffic: healthy -> promote, failed -> rollback
    (``rollout auto --strategy blue-green`` climbs the ladder (100,))."""
    assert next_step(100, PROMOTE, 0, 2, ladder=(100,))[0].action == "promote"
    assert next_step(100, WAIT, 0, 2, ladder=(100,))[0].action == "hold"
    assert next_step(100, ROLLBACK, 1, 2, ladder=(100,))[0].action == "rollback"
    assert analyze(SPEC, evidence(challenger={"p99_s": 0.030})).decision == "rollback"


def test_ladders_are_checked() -> None:
    assert parse_ladder("10, 25,50,100") == (10, 25, 50, 100)
    for bad in ("", "50,25", "0,50", "10,10", "10,120"):
        with pytest.raises(ValueError):
            parse_ladder(bad)


# -- evidence ---------------------------------------------------------------------------------


def shadow_log(bad_challenger: bool, rows: int = 400) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Champion and shadow records of the same requests, and the outcomes of those requests."""
    data = generate("credit_risk", rows, seed=11)
    labels = data.frame[SPEC.target.name].to_numpy()
    rng = np.random.default_rng(1)
    shadow = rng.random(rows) if bad_challenger else np.clip(data.truth + rng.normal(0, 0.01, rows), 0, 1)
    records, outcomes = [], []
    for i in range(rows):
        request = uuid.uuid4().hex
        base = {"request_id": request, "model": "credit_risk", "inputs": {}}
        records.append(base | {"model_version": "1", "role": "champion", "outputs": {"probability": [data.truth[i]]}})
        records.append(base | {"model_version": "2", "role": "challenger", "outputs": {"probability": [shadow[i]]}})
        outcomes.append(outcome_event("credit_risk", request, bool(labels[i])))
    return records, outcomes


def test_evidence_from_shadow_records_judges_the_challenger_by_live_accuracy() -> None:
    records, outcomes = shadow_log(bad_challenger=True)
    ev = evidence_from_log(SPEC, records, outcomes)
    assert (ev.champion.version, ev.challenger.version) == ("1", "2")
    assert ev.champion.rows == ev.challenger.rows == 400 and ev.challenger.labels == 400
    assert ev.champion.live is not None and ev.champion.live > 0.75
    assert ev.challenger.live is not None and ev.challenger.live < 0.65
    assert analyze(SPEC, ev).decision == "rollback"
    good, good_outcomes = shadow_log(bad_challenger=False)
    assert analyze(SPEC, evidence_from_log(SPEC, good, good_outcomes)).decision == "promote"
    unlabelled = evidence_from_log(SPEC, records, [])  # no labels: the score shift decides
    assert unlabelled.challenger.live is None and unlabelled.score_psi is not None and unlabelled.score_psi > 0.25
    assert analyze(SPEC, unlabelled).decision == "rollback"


def test_score_psi_uses_the_champions_quantile_bins() -> None:
    rng = np.random.default_rng(0)
    same = rng.random(2000)
    assert score_psi(same, rng.random(2000)) == pytest.approx(0.0, abs=0.02)
    assert score_psi(same, rng.random(2000) ** 4) > 0.5
    assert score_psi([], [0.1]) is None


def test_prometheus_answers_become_evidence() -> None:
    answers = {  # what Prometheus would answer for each query of each version
        "1": {"rows": 5000, "requests": 5000, "errors": 5, "p99": 0.012, "live": 0.8, "labels": 800},
        "2": {"rows": 500, "requests": 500, "errors": 25, "p99": float("nan"), "shadow_p99": 0.02, "labels": 0},
    }
    buckets = {"1": [(0.5, 2500), (1.0, 5000)], "2": [(0.5, 450), (1.0, 500)]}
    by_text = {}
    for version, values in answers.items():
        queries = promql(SPEC, version, "10m")
        for name, value in values.items():
            by_text[queries[name]] = [({}, value)]
        by_text[queries["buckets"]] = [({"le": str(le)}, count) for le, count in buckets[version]]

    ev = evidence_from_prometheus(SPEC, lambda text: by_text.get(text, []), "1", "2", "10m")
    assert ev.champion == Side("1", 5000, 0.001, 0.012, 0.8, 800)
    assert ev.challenger == Side("2", 500, 0.05, 0.02, None, 0)  # NaN p99: the shadow histogram
    assert ev.score_psi is not None and ev.score_psi > 0.5
    verdict = analyze(SPEC, ev)
    assert verdict.decision == "rollback" and any("error rate 5.00%" in r for r in verdict.reasons)
    assert 'version="2"' in promql(SPEC, "2", "10m")["rows"]
    assert bucket_shares([({"le": "+Inf"}, 10), ({"le": "0.5"}, 4)]) == [0.4, 0.6]


# -- rollout auto on a GitOps overlay -----------------------------------------------------------


@pytest.fixture
def manifests(tmp_path: Path, kustomize: str) -> Iterator[Path]:
    copy = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", copy)
    yield copy


def auto_args(manifests: Path, **extra: Any) -> argparse.Namespace:
    args = rollout.parse_args(
        ["auto", "credit_risk", "--overlay", "dev", "--no-aliases", "--interval", "0", "--failure-limit", "2"]
    )
    return argparse.Namespace(**{**vars(args), "manifests": manifests, "version": "7", **extra})


@pytest.mark.integration
def test_auto_climbs_the_ladder_and_promotes(manifests: Path) -> None:
    args = auto_args(manifests)
    overlay = Overlay(manifests / "overlays" / "dev")
    seen: list[int | None] = []

    def analyse() -> Verdict:
        seen.append(Serving.from_isvc(overlay.get("credit_risk")).canary_percent)
        return PROMOTE

    lines: list[str] = []
    outcome = rollout.auto(args, overlay, lambda: None, lines.append, analyse, sleep=lambda s: None)
    assert outcome == "promote"
    assert seen == [10, 25, 50, 100]
    final = Serving.from_isvc(overlay.get("credit_risk"))
    assert final == Serving("models:/credit_risk/7", None, None, 50)


@pytest.mark.integration
def test_auto_rolls_back_after_the_failure_limit(manifests: Path) -> None:
    args = auto_args(manifests)
    overlay = Overlay(manifests / "overlays" / "dev")
    verdicts = iter([PROMOTE, WAIT, ROLLBACK, ROLLBACK])
    lines: list[str] = []
    outcome = rollout.auto(args, overlay, lambda: None, lines.append, lambda: next(verdicts), sleep=lambda s: None)
    assert outcome == "rollback"
    assert any("check 4: rollback -> rollback" in line for line in lines)
    assert Serving.from_isvc(overlay.get("credit_risk")) == Serving("models:/credit_risk/1", None, None, 50)
