"""Drift statistics and windows (pure): PSI, Jensen-Shannon, the spec's thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from feature_specs import Validator, load_spec
from feature_specs.reference import build_reference
from feature_specs.synthetic import generate
from pipelines.monitoring.drift import Windows, feature_drift, js_distance, psi, score_shift, window_drift

SPEC = load_spec("credit_risk")


def columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Validated model input as JSON-like lists (None for missing), as the inference log holds it."""
    validated = Validator(SPEC, max_batch=len(frame)).columns(frame[SPEC.feature_names])
    return {k: [None if isinstance(x, float) and np.isnan(x) else x for x in v.tolist()] for k, v in validated.items()}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data = generate("credit_risk", 4000, seed=1)
    frame = Validator(SPEC, max_batch=4000).frame(data.frame[SPEC.feature_names])
    return build_reference(SPEC, frame, data.truth)


def shifted(seed: int, rows: int = 600) -> pd.DataFrame:
    """Live traffic whose customers pay a lot later and are mostly developers."""
    frame = generate("credit_risk", rows, seed=seed).frame.copy()
    frame["avg_days_to_pay"] = (frame["avg_days_to_pay"] + 90).clip(upper=720)
    frame["industry_segment"] = np.where(np.arange(rows) % 4 == 0, frame["industry_segment"], "developer")
    return frame


def test_psi_is_zero_for_equal_distributions_and_matches_the_formula() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    expected = (0.4 - 0.25) * np.log(0.4 / 0.25) + (0.1 - 0.25) * np.log(0.1 / 0.25)
    assert psi([0.25, 0.25, 0.25, 0.25], [0.4, 0.1, 0.25, 0.25]) == pytest.approx(expected)
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))  # empty bins do not make it infinite


def test_js_distance_is_0_for_the_same_shares_and_1_for_disjoint_ones() -> None:
    assert js_distance({"a": 0.5, "b": 0.5}, {"b": 0.5, "a": 0.5}) == pytest.approx(0.0)
    assert js_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert 0 < js_distance({"a": 0.5, "b": 0.5}, {"a": 0.7, "b": 0.3}) < 0.2


def test_traffic_like_training_does_not_drift(reference: dict[str, Any]) -> None:
    live = columns(generate("credit_risk", 600, seed=2).frame)
    result = window_drift(SPEC, "1", reference, live)
    assert {f.feature for f in result.features} == set(SPEC.feature_names)
    assert not result.drifted, result.reason()
    assert max(f.value for f in result.features if f.method == "psi") < SPEC.drift.psi_threshold / 2


def test_shifted_traffic_drifts_on_exactly_the_shifted_features(reference: dict[str, Any]) -> None:
    result = window_drift(SPEC, "1", reference, columns(shifted(seed=3)))
    assert result.drifted
    assert {f.feature for f in result.drifted_features} == {"avg_days_to_pay", "industry_segment"}
    methods = {f.feature: f.method for f in result.drifted_features}
    assert methods == {"avg_days_to_pay": "psi", "industry_segment": "js"}
    assert "avg_days_to_pay psi=" in result.reason()


def test_a_feature_that_suddenly_arrives_empty_drifts(reference: dict[str, Any]) -> None:
    live = columns(generate("credit_risk", 600, seed=4).frame)
    assert reference["features"]["annual_revenue_eur"]["missing"] < 0.2
    drift = feature_drift(SPEC, "annual_revenue_eur", reference["features"]["annual_revenue_eur"], [None] * 600)
    assert drift.drifted and drift.method == "psi"
    fine = feature_drift(
        SPEC, "annual_revenue_eur", reference["features"]["annual_revenue_eur"], live["annual_revenue_eur"]
    )
    assert not fine.drifted


def test_min_drifted_features_from_the_spec_is_honoured(reference: dict[str, Any]) -> None:
    strict = SPEC.model_copy(update={"drift": SPEC.drift.model_copy(update={"min_drifted_features": 3})})
    result = window_drift(strict, "1", reference, columns(shifted(seed=5)))
    assert len(result.drifted_features) == 2 and not result.drifted


def test_score_shift_compares_live_scores_with_the_training_scores(reference: dict[str, Any]) -> None:
    same = generate("credit_risk", 2000, seed=6).truth
    assert score_shift(reference, same.tolist()) < 0.05
    assert score_shift(reference, (same * 0.2 + 0.6).tolist()) > 1.0


def test_windows_are_cut_per_model_version_at_the_window_size() -> None:
    windows = Windows({"credit_risk": 5})
    assert windows.add("credit_risk", "1", {"x": [1, 2, 3]}, [0.1, 0.2, 0.3]) == []
    assert windows.add("credit_risk", "2", {"x": [9]}, [0.9]) == []  # another version: its own window
    full = windows.add("credit_risk", "1", {"x": [4, 5, 6, 7, 8, 9]}, [0.4] * 6)
    assert full == [{"x": [1, 2, 3, 4, 5], "__score__": [0.1, 0.2, 0.3, 0.4, 0.4]}]
    assert windows.pending("credit_risk", "1") == 4
    assert windows.pending("credit_risk", "2") == 1
    assert [w["x"] for w in windows.add("credit_risk", "1", {"x": [0] * 9}, [0.0] * 9)] == [[6, 7, 8, 9, 0], [0] * 5]
    assert windows.pending("credit_risk", "1") == 3
