"""Training reference statistics (feature_specs.reference): the drift baseline saved with a model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from feature_specs import Validator, load_spec
from feature_specs.reference import (
    OTHER,
    bin_frequencies,
    build_reference,
    category_frequencies,
    quantile_edges,
    read_reference,
    write_reference,
)
from feature_specs.synthetic import generate


@pytest.fixture(scope="module")
def credit() -> tuple[pd.DataFrame, np.ndarray]:
    spec = load_spec("credit_risk")
    frame = generate("credit_risk", 3000, seed=1).frame
    columns = {n: frame[n].to_numpy() if frame[n].dtype != object else list(frame[n]) for n in spec.feature_names}
    x = Validator(spec, max_batch=len(frame)).frame(columns)
    return x, np.random.default_rng(0).random(len(x))


def test_continuous_feature_gets_equal_mass_bins(credit: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, scores = credit
    ref = build_reference(load_spec("credit_risk"), x, scores)
    age = ref["features"]["company_age_years"]
    assert age["kind"] == "numeric"
    assert len(age["edges"]) == 9 and age["edges"] == sorted(age["edges"])
    assert len(age["frequencies"]) == 10
    assert sum(age["frequencies"]) == pytest.approx(1.0)
    assert max(age["frequencies"]) < 0.13  # deciles of a continuous variable
    assert ref["rows"] == 3000 and ref["bins"] == 10 and ref["spec_version"] == "1.0.0"


def test_missing_share_and_median_imputed_column(credit: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, scores = credit
    revenue = build_reference(load_spec("credit_risk"), x, scores)["features"]["annual_revenue_eur"]
    assert revenue["missing"] == pytest.approx(x["annual_revenue_eur"].isna().mean())
    assert revenue["missing"] > 0.03  # the generator blanks some revenues


def test_bool_feature_collapses_to_value_bins(credit: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, scores = credit
    retention = build_reference(load_spec("credit_risk"), x, scores)["features"]["retention_held"]
    assert retention["edges"] == [0.0, 1.0]
    share_true = float((x["retention_held"] == 1).mean())
    assert retention["frequencies"] == pytest.approx([1 - share_true, share_true, 0.0])


def test_categories_are_counted_per_spec_category(credit: tuple[pd.DataFrame, np.ndarray]) -> None:
    x, scores = credit
    spec = load_spec("credit_risk")
    segment = build_reference(spec, x, scores)["features"]["industry_segment"]
    assert segment["kind"] == "category"
    assert set(segment["frequencies"]) == {*spec.feature("industry_segment").categories, OTHER}  # type: ignore[misc]
    assert segment["frequencies"]["general_contractor"] == pytest.approx(
        (x["industry_segment"] == "general_contractor").mean()
    )


def test_unknown_categories_and_nulls() -> None:
    freqs = category_frequencies(["a", "b"], ["a", "a", "c", None])
    assert freqs == {"a": pytest.approx(2 / 3), "b": 0.0, OTHER: pytest.approx(1 / 3)}


def test_scores_distribution_and_json_round_trip(credit: tuple[pd.DataFrame, np.ndarray], tmp_path) -> None:
    x, scores = credit
    ref = build_reference(load_spec("credit_risk"), x, scores)
    assert sum(ref["scores"]["frequencies"]) == pytest.approx(1.0)
    write_reference(ref, tmp_path)
    assert read_reference(tmp_path) == json.loads(json.dumps(ref))


def test_live_values_outside_training_range_land_in_open_end_bins() -> None:
    values = np.arange(100, dtype=np.float64)
    edges = quantile_edges(values, 4)
    assert bin_frequencies(edges, np.array([-1e9, 1e9])) == [0.5, 0.0, 0.0, 0.5]
    assert bin_frequencies(edges, values) == pytest.approx([0.25] * 4, abs=0.01)
