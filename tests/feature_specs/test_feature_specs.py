"""Feature specs, the shared validator and transform, and the synthetic data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, roc_auc_score

from feature_specs import InvalidFeature, SpecError, Validator, load_spec, load_specs, parse_spec, spec_names
from feature_specs.schema import FeatureSpec
from feature_specs.synthetic import best_metrics, generate, has_generator, to_events
from feature_specs.transform import build_model, inner_estimator, monotonic_constraints, offset_column
from tests.spec_data import spec_rows

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, name: str, mutate: object) -> Path:
    raw = yaml.safe_load((ROOT / "feature_specs" / "credit_risk.yaml").read_text())
    mutate(raw)  # type: ignore[operator]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_spec_loads(spec_name: str) -> None:
    name = spec_name
    spec = load_spec(name)
    assert spec.name == name and spec.features and spec.source_topic
    assert not set(spec.pii_names) & set(spec.feature_names)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["features"][0].update(dtype="text"), "features[0] 'industry_segment'.dtype"),
        (
            lambda r: r["features"][1].update(min=10, max=1),
            "features[1] 'company_age_years': 'min' is greater than 'max'",
        ),
        (
            lambda r: r["features"][2].pop("impute"),
            "features[2] 'annual_revenue_eur': an optional feature needs 'impute'",
        ),
        (lambda r: r["features"][0].pop("categories"), "features[0] 'industry_segment': a category feature needs"),
        (lambda r: r.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda r: r.pop("target"), "target: Field required"),
        (lambda r: r["features"].append(dict(r["features"][1])), "names used twice: company_age_years"),
        (
            lambda r: r.update(derived=[{"name": "x", "description": "-", "mean_of": ["avg_days_to_pay", "nope"]}]),
            "derived 'x': not numeric features of this spec: nope",
        ),
        (
            lambda r: r.update(
                derived=[{"name": "x", "description": "-", "mean_of": ["avg_days_to_pay", "industry_segment"]}]
            ),
            "derived 'x': not numeric features of this spec: industry_segment",
        ),
        (
            lambda r: r.update(
                derived=[{"name": "x", "description": "-", "mean_of": ["avg_days_to_pay", "avg_days_to_pay"]}]
            ),
            "'mean_of' names a feature twice",
        ),
        (
            lambda r: r.update(derived=[{"name": "x", "description": "-", "mean_of": ["avg_days_to_pay"]}]),
            "derived[0] 'x'.mean_of",
        ),
        (
            lambda r: r.update(
                derived=[
                    {"name": "active_projects", "description": "-", "mean_of": ["avg_days_to_pay", "active_projects"]}
                ]
            ),
            "names used twice: active_projects",
        ),
        (
            lambda r: r["estimator"].update(target_transform="log1p"),
            "estimator.target_transform is only for regression",
        ),
        (lambda r: r["estimator"].update(target_transform="sqrt"), "estimator.target_transform: Input should be"),
    ],
)
def test_malformed_spec_names_file_and_field(tmp_path: Path, mutate: object, expected: str) -> None:
    path = _write(tmp_path, "credit_risk", mutate)
    with pytest.raises(SpecError) as err:
        parse_spec(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_spec_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not match the file name"):
        parse_spec(_write(tmp_path, "other", lambda r: None))


def test_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "credit_risk.yaml"
    bad.write_text("features: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec(bad)


def test_validator_fills_constants_and_leaves_medians_to_the_transform() -> None:
    spec = load_spec("lead_score")
    zero = [f.model_copy(update={"impute": 0}) if f.name == "interactions" else f for f in spec.features]
    for_zero = spec.model_copy(update={"features": zero})
    given = {"customer_industry": ["Energy"], "opportunity_value": [1e5]}
    columns = Validator(spec).columns(given)
    assert columns["lead_source"].tolist() == ["unknown"]
    assert columns["existing_customer"].tolist() == [False]
    assert np.isnan(columns["interactions"][0])  # median learned at training
    assert np.isnan(columns["days_since_first_contact"][0])
    assert list(columns) == spec.feature_names
    assert Validator(for_zero).columns(given)["interactions"].tolist() == [0.0]


def test_validator_accepts_a_dataframe_with_nan_for_missing() -> None:
    data = generate("credit_risk", 200, seed=2).frame
    frame = Validator(load_spec("credit_risk")).frame(data[load_spec("credit_risk").feature_names])
    assert frame["contract_type"].notna().all()  # constant-imputed
    assert frame["annual_revenue_eur"].isna().any()  # median, later


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"industry": "Construction"}, "opportunity_value: required feature is missing"),
        ({"industry": "Construction", "value": "-5"}, "opportunity_value: value -5 is below the minimum 0"),
        (
            {"industry": "Construction", "value": "5", "existing_customer": "maybe"},
            "existing_customer: expected true or false",
        ),
        ({"industry": "Construction", "value": "5", "interactions": "1.5"}, "interactions: expected an integer"),
        ({"industry": "Construction", "value": "5", "contact_email": "a@b.c"}, "contact_email: unknown feature"),
    ],
)
def test_query_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidFeature) as err:
        Validator(load_spec("lead_score")).query(params)
    assert str(err.value).startswith(message)


def test_monotone_constraints_follow_the_spec() -> None:
    spec = load_spec("credit_risk")
    constraints = monotonic_constraints(spec)
    numeric = [f for f in spec.features if f.numeric]
    assert constraints[[f.name for f in numeric].index("late_payment_ratio_12m")] == 1
    assert constraints[[f.name for f in numeric].index("company_age_years")] == -1
    assert len(constraints) == len(numeric) + sum(len(f.categories or ()) for f in spec.features if not f.numeric)


def test_a_derived_feature_is_the_row_mean_of_what_is_recorded() -> None:
    """stock_demand's lag mean and lag log mean: computed by the shared transform (training and
    serving alike), a missing lag left out, after the one-hot columns, with the spec's monotone
    constraints."""
    spec = load_spec("stock_demand")
    mean, log_mean = spec.derived
    assert (mean.name, mean.log1p, log_mean.name, log_mean.log1p) == (
        "demand_lag_mean",
        False,
        "demand_lag_log_mean",
        True,
    )
    assert mean.mean_of == log_mean.mean_of
    rows = spec_rows(spec, 50, seed=1)
    x = Validator(spec, 50).frame(rows[spec.feature_names])
    x.loc[:4, "demand_lag_4w"] = np.nan
    model = build_model(spec).fit(x, rows[spec.target.name])
    out = model.named_steps["transform"].transform(x)
    lags = x[list(mean.mean_of)].to_numpy(dtype=np.float64)
    for values, column in ((lags, -2), (np.log1p(lags), -1)):
        expected = np.where(np.isnan(values[:, 2]), values[:, :2].mean(axis=1), values.mean(axis=1))
        np.testing.assert_allclose(out[:, column], expected, rtol=1e-12)
    assert out.shape[1] == len(monotonic_constraints(spec)) and monotonic_constraints(spec)[-2:] == [1, 1]


def test_a_log1p_target_transform_fits_in_logs_and_answers_in_units() -> None:
    """stock_demand's ``target_transform: log1p`` with ``offset: demand_lag_log_mean``: the trees
    fit log1p(units) minus the lags' log mean, the pipeline answers expm1 of their prediction plus
    it; a target that may be negative cannot have log1p."""
    spec = load_spec("stock_demand")
    assert spec.estimator.target_transform == "log1p" and spec.estimator.offset == "demand_lag_log_mean"
    rows = spec_rows(spec, 300, seed=2)
    x, y = Validator(spec, 300).frame(rows[spec.feature_names]), rows[spec.target.name].to_numpy()
    model = build_model(spec).fit(x, y)
    trees = inner_estimator(model.named_steps["model"])
    features = model.named_steps["transform"].transform(x)
    assert offset_column(spec) == features.shape[1] - 1
    baseline = features[:, -1]
    np.testing.assert_allclose(model.predict(x), np.expm1(trees.predict(features) + baseline), rtol=1e-12)
    refit = clone(trees).fit(features, np.log1p(y) - baseline)  # what the trees were fitted to
    np.testing.assert_allclose(refit.predict(features), trees.predict(features), rtol=1e-12)
    raw = yaml.safe_load((ROOT / "feature_specs" / "stock_demand.yaml").read_text())
    raw["target"].pop("min")
    with pytest.raises(ValueError, match="log1p needs a target with min >= 0"):
        FeatureSpec.model_validate(raw)


def _stock_demand_with(mutate: object) -> FeatureSpec:
    raw = yaml.safe_load((ROOT / "feature_specs" / "stock_demand.yaml").read_text())
    mutate(raw)  # type: ignore[operator]
    return FeatureSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["estimator"].update(offset="nope"), "estimator.offset 'nope' is not a derived feature"),
        (
            lambda r: r["estimator"].update(offset="demand_lag_mean"),
            "a log1p derived feature goes with target_transform log1p",
        ),
        (lambda r: r["estimator"].pop("target_transform"), "a log1p derived feature goes with target_transform log1p"),
        (
            lambda r: r["derived"][1].update(mean_of=["demand_lag_4w", "supplier_lead_time_days"]),
            "needs a feature that is not optional",
        ),
        (lambda r: r["features"][4].update(monotone="decreasing"), "none may be monotone decreasing"),
        (lambda r: r["features"][5].pop("min"), "log1p needs features with min >= 0: demand_lag_2w"),
    ],
)
def test_an_offset_is_a_derived_feature_on_the_scale_the_trees_fit(mutate: object, expected: str) -> None:
    """``estimator.offset`` names a derived feature every valid request has, in logs when the target
    is fitted in logs, that rises with its features (so the monotone constraints still hold)."""
    assert _stock_demand_with(lambda r: None).estimator.offset == "demand_lag_log_mean"
    with pytest.raises(ValueError, match=expected):
        _stock_demand_with(mutate)


def test_synthetic_data_is_reproducible_and_messy() -> None:
    a, b = generate("lead_score", 500, seed=9), generate("lead_score", 500, seed=9)
    assert a.frame.equals(b.frame)
    assert a.frame["lead_source"].isna().any()  # missing optional values
    assert not generate("lead_score", 500, seed=10).frame.equals(a.frame)


@pytest.mark.parametrize("name", [n for n in spec_names() if has_generator(n)])
def test_every_synthetic_row_passes_its_spec(name: str) -> None:
    data = generate(name, 200_000, seed=4)  # large enough to reach the rare outliers
    spec = data.spec
    Validator(spec, max_batch=len(data.frame)).frame(data.frame[spec.feature_names])
    events = to_events(generate(name, 20, seed=4))
    assert all(set(spec.pii_names) <= set(e) and "event_id" in e for e in events)
    assert len({e["event_id"] for e in events}) == 20


@pytest.mark.parametrize("name", [n for n in spec_names() if has_generator(n)])
def test_trained_model_approaches_but_does_not_beat_the_best_achievable(name: str) -> None:
    train, test = generate(name, 6000, seed=1), generate(name, 4000, seed=2)
    spec = train.spec
    validator = Validator(spec, max_batch=10_000)
    model = build_model(spec).fit(validator.frame(train.frame[spec.feature_names]), train.frame[spec.target.name])
    x, y = validator.frame(test.frame[spec.feature_names]), test.frame[spec.target.name]
    best = best_metrics(test)
    if spec.is_classifier:
        auc = roc_auc_score(y, model.predict_proba(x)[:, 1])
        assert best["roc_auc"] - 0.05 < auc <= best["roc_auc"] + 0.01
        assert auc >= spec.gate.floors["roc_auc"]
    else:
        mae = mean_absolute_error(y, model.predict(x))
        assert best["mae"] <= mae < spec.gate.ceilings["mae"]


# -- discovery: the YAML is the model ----------------------------------------------------


def _copy_spec(folder: Path, name: str, **changes: object) -> Path:
    raw = yaml.safe_load((ROOT / "feature_specs" / "lead_score.yaml").read_text())
    raw.update({"name": name, "source_topic": f"test.{name}", "outcome_topic": f"test.{name}-outcomes"} | changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_dropped_yaml_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_spec(tmp_path, "deal_score")
    monkeypatch.setenv("CONSTRUCTOS_SPEC_PATH", str(tmp_path))
    assert "deal_score" in spec_names() and "lead_score" in spec_names()
    assert load_spec("deal_score").source_topic == "test.deal_score"
    assert "deal_score" in load_specs()


def test_every_spec_gets_rows_its_validator_accepts(spec_name: str) -> None:
    spec = load_spec(spec_name)
    data = spec_rows(spec, 500, seed=1)
    frame = Validator(spec, max_batch=500).frame(data[spec.feature_names])
    assert list(frame.columns) == spec.feature_names


@pytest.mark.parametrize(
    ("file_name", "changes", "expected"),
    [
        ("deal_score", {"features": "none"}, "deal_score.yaml: invalid spec: features: Input should be a valid"),
        ("deal_score", {"source_topic": "Bad Topic!"}, "source_topic: String should match pattern"),
        ("deal_score", {"source_topic": "sales.opportunities"}, "source_topic: topic 'sales.opportunities' is"),
        ("Deal-Score", {}, "Deal-Score.yaml: name: file names are model names"),
        ("lead_score", {}, "lead_score.yaml: name: model 'lead_score' is already defined by"),
    ],
)
def test_a_broken_spec_names_its_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_name: str, changes: dict[str, object], expected: str
) -> None:
    path = _copy_spec(tmp_path, "deal_score", **changes)
    path.rename(tmp_path / f"{file_name}.yaml")
    if file_name != "deal_score":  # the name inside must match the file to get that far
        raw = yaml.safe_load((tmp_path / f"{file_name}.yaml").read_text())
        (tmp_path / f"{file_name}.yaml").write_text(yaml.safe_dump(raw | {"name": file_name}))
    monkeypatch.setenv("CONSTRUCTOS_SPEC_PATH", str(tmp_path))
    with pytest.raises(SpecError) as err:
        load_specs()
    assert expected in str(err.value)


def test_unknown_model_lists_the_known_ones() -> None:
    known = ", ".join(spec_names())  # whatever models there are: adding a YAML keeps this green
    with pytest.raises(SpecError, match=f"unknown model 'nope'; known: {known}$"):
        load_spec("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: bad_model\nfeatures:\n  - name: a\n     dtype: float\n", ":4:11: not valid YAML: mapping values"),
        ("name: bad_model\nfeatures: [unclosed\n", ":3:1: not valid YAML: "),
        ("name: bad_model\nfeatures:\n\t- name: a\n", ":3:1: not valid YAML: found character '\\t' "),
    ],
)
def test_a_yaml_mistake_is_one_line_with_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad_model.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        parse_spec(path)
    assert str(err.value).startswith(str(path) + expected) and "\n" not in str(err.value)


def test_an_invalid_entry_is_one_line_naming_the_feature(tmp_path: Path) -> None:
    path = _write(tmp_path, "credit_risk", lambda r: r["features"][1].update(dtype="flaot"))
    with pytest.raises(SpecError) as err:
        parse_spec(path)
    name = yaml.safe_load(path.read_text())["features"][1]["name"]
    assert str(err.value) == (
        f"{path}: invalid spec: features[1] '{name}'.dtype: Input should be 'float', 'int', 'category' or 'bool'"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["pipelines.streaming.publish", "bad_model", "--rows", "1"],
        ["pipelines.streaming.trigger", "--models", "bad_model"],
        ["pipelines.training.run", "bad_model"],
    ],
)
def test_every_command_reports_a_spec_mistake_in_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "bad_model.yaml").write_text("name: bad_model\nfeatures:\n  - name: a\n     dtype: float\n")
    env = os.environ | {"CONSTRUCTOS_SPEC_PATH": str(tmp_path), "KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last.startswith(f"error: {tmp_path / 'bad_model.yaml'}:4:11: not valid YAML: mapping values are not allowed")


def test_no_generator_is_a_clear_error_not_a_key_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_spec(tmp_path, "deal_score")
    monkeypatch.setenv("CONSTRUCTOS_SPEC_PATH", str(tmp_path))
    with pytest.raises(LookupError, match=r"deal_score: no synthetic generator .* topic 'test\.deal_score'"):
        generate("deal_score", 10)


def test_one_row_is_validated_as_in_a_batch(spec_name: str) -> None:
    """The 1-row fast path answers what the batch path answers: the same values, the same errors."""
    spec = load_spec(spec_name)
    validator = Validator(spec)
    frame = spec_rows(spec, 40, seed=3)[spec.feature_names].astype(object)
    rows = [{k: (None if v is None or v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
    assert any(None not in r.values() for r in rows), "no complete row: the fast path would go untested"
    numeric = next(f for f in spec.features if f.numeric and f.dtype != "bool")
    category = next((f for f in spec.features if f.dtype == "category"), None)
    broken = [
        {**rows[0], numeric.name: 1e300},
        {**rows[0], numeric.name: float("nan")},
        {**rows[0], numeric.name: "12"},
        {**rows[0], numeric.name: True},
        {**rows[0], numeric.name: None},
        {**rows[0], numeric.name: 2.5},
        {**rows[0], "not_a_feature": 1},
        {k: v for k, v in rows[0].items() if k != numeric.name},
    ]
    if category is not None:
        broken += [{**rows[0], category.name: "no-such-category"}, {**rows[0], category.name: 3}]
    for row in rows + broken:
        try:
            batch = validator.columns({k: [v, v] for k, v in row.items()})
        except InvalidFeature as exc:
            with pytest.raises(InvalidFeature) as single:
                validator.columns({k: [v] for k, v in row.items()})
            assert str(single.value) == str(exc)
            continue
        alone = validator.columns({k: [v] for k, v in row.items()})
        assert list(alone) == list(batch)
        for name, column in alone.items():
            assert column.dtype == batch[name].dtype, name
            np.testing.assert_array_equal(column, batch[name][:1], err_msg=name)  # NaN: the transform imputes
