"""Model quality: metrics with bootstrap intervals on the same rows, baselines in the gate, the tune
step (seeded, budgeted, trials as MLflow child runs) and calibration that still converts to ONNX."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn import metrics as skm

from feature_specs import limits, load_spec
from feature_specs.spec import FeatureSpec, Search, SearchRange, SpecError, parse_spec
from feature_specs.synthetic import generate
from feature_specs.transform import SKOPS_TRUSTED_TYPES, build_model
from pipelines.demo import land_synthetic
from pipelines.settings import get_settings
from pipelines.streaming.landing.folder import read_folder
from pipelines.training.steps import baselines, calibrate, quality, tune
from pipelines.training.steps.evaluate import gate, holdout_scores
from pipelines.training.steps.train import labels, model_input, split

CREDIT = load_spec("credit_risk")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def landed(model: str, rows: int, seed: int = 0) -> pd.DataFrame:
    land_synthetic(model, rows, seed=seed)
    return read_folder(get_settings().landing_dir, model)


def with_search(spec: FeatureSpec, **budget: float) -> FeatureSpec:
    space = {"learning_rate": SearchRange(low=0.03, high=0.3, log=True), "max_leaf_nodes": [4, 31]}
    search = Search.model_validate({"params": space, "folds": 2, "max_rows": 800, **budget})
    return spec.model_copy(update={"estimator": spec.estimator.model_copy(update={"search": search})})


# -- metrics and intervals ---------------------------------------------------------------


def test_weighted_metrics_equal_scikit_learns_with_sample_weights() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    y = rng.random(n) < 0.2
    score = np.round(rng.random(n) * 0.6 + 0.3 * y, 2)  # many ties, as a tree ensemble gives
    w = rng.multinomial(n, np.full(n, 1 / n)).astype(float)[None]
    got = {name: f(w)[0] for name, f in quality.classifier_metrics(y, score, 0.3).items()}
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score, sample_weight=w[0]), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, score, sample_weight=w[0]), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, score >= 0.3, sample_weight=w[0]), abs=1e-12)
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, score, sample_weight=w[0]), abs=1e-12)
    actual = np.round(rng.gamma(2, 50, n))
    predicted = actual * rng.lognormal(0, 0.2, n)
    reg = {name: f(w)[0] for name, f in quality.regression_metrics(actual, predicted).items()}
    assert reg["mae"] == pytest.approx(skm.mean_absolute_error(actual, predicted, sample_weight=w[0]))
    assert reg["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(actual, predicted, sample_weight=w[0])))
    positive = actual > 0
    expected = skm.mean_absolute_percentage_error(actual[positive], predicted[positive], sample_weight=w[0][positive])
    assert reg["mape"] == pytest.approx(expected)


def test_bootstrap_intervals_hold_the_point_and_pair_the_gap() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.15
    truth = np.clip(0.15 + 0.3 * (y - 0.15) + rng.normal(0, 0.1, n), 0, 1)
    scores = {"model": truth + rng.normal(0, 0.05, n), "best": truth}
    report = quality.bootstrap(CREDIT, y, scores, resamples=300, seed=0)
    again = quality.bootstrap(CREDIT, y, scores, resamples=300, seed=0)
    assert report.flat() == again.flat()  # seeded
    for scorer, metrics in report.metrics.items():
        for name, iv in metrics.items():
            assert iv.low <= iv.value <= iv.high, (scorer, name)
    auc = report.metrics["model"]["roc_auc"]
    assert auc.value == pytest.approx(skm.roc_auc_score(y, scores["model"]))
    gap = report.gaps["best"]
    assert gap.value > 0 and gap.low > 0  # noise only hurts: the paired gap is clearly positive
    # paired resamples: the gap's interval is narrower than the two AUC intervals would suggest
    best = report.metrics["best"]["roc_auc"]
    assert gap.high - gap.low < 100 * ((auc.high - auc.low) + (best.high - best.low)) / best.value


def test_best_achievable_is_scored_on_exactly_the_model_holdout_rows(data_dir: Path) -> None:
    frame = landed("credit_risk", 2000, seed=4)
    data = generate("credit_risk", 2000, seed=4)  # row i of the generator is landed row i
    by_event = dict(zip(frame["event_id"], limits.best_achievable("credit_risk", data.frame), strict=True))
    train_rows, holdout = split(CREDIT, frame.sample(frac=1, random_state=3), 0.2, seed=0)  # order must not matter
    model = build_model(CREDIT, max_iter=20).fit(model_input(CREDIT, train_rows), labels(CREDIT, train_rows))
    x, y, scored = holdout_scores(CREDIT, model, train_rows, holdout, data_dir)
    assert set(scored) == {"model", "baseline", "best"}
    assert all(len(s) == len(holdout) == len(y) == len(x) for s in scored.values())
    assert np.array_equal(scored["best"], [by_event[e] for e in holdout["event_id"]])
    assert not set(holdout["event_id"]) & set(train_rows["event_id"])
    # a holdout row without a known truth: no best achievable rather than a different row set
    stray = holdout.copy()
    stray.loc[0, "event_id"] = "not-synthetic"
    assert baselines.holdout_best_achievable(data_dir, CREDIT, stray) is None


def test_naive_last_value_forecast_for_specs_with_lags() -> None:
    spec = load_spec("stock_demand")
    assert baselines.last_value_feature(spec) == "demand_lag_1w"
    assert baselines.last_value_feature(CREDIT) is None
    x = model_input(spec, generate("stock_demand", 50, seed=0).frame)
    assert np.array_equal(baselines.naive_forecast(spec, x), x["demand_lag_1w"].to_numpy())


# -- baselines in the gate ---------------------------------------------------------------


def test_the_baseline_rule_rejects_a_crippled_spec() -> None:
    crippled = CREDIT.model_copy(
        update={
            "estimator": CREDIT.estimator.model_copy(
                update={"params": {"max_iter": 3, "max_leaf_nodes": 2, "learning_rate": 0.01}}
            ),
            "gate": CREDIT.gate.model_copy(update={"floors": {}, "ceilings": {}}),  # only the baseline can object
        }
    )
    frame = generate("credit_risk", 6000, seed=5).frame
    train_rows, holdout = split(crippled, frame, 0.25, seed=0)
    model = build_model(crippled).fit(model_input(crippled, train_rows), labels(crippled, train_rows))
    _, y, scored = holdout_scores(crippled, model, train_rows, holdout, None)
    ours, baseline = (skm.roc_auc_score(y, scored[s]) for s in ("model", "baseline"))
    result = gate(crippled, {"roc_auc": ours}, None, {"baseline": baseline})
    assert not result.passed
    assert (
        f"roc_auc {ours:.4f} vs untuned default estimator {baseline:.4f}: loses beyond tolerance 1%" in result.reasons
    )
    healthy = gate(
        CREDIT.model_copy(update={"gate": crippled.gate}), {"roc_auc": baseline}, None, {"baseline": baseline}
    )
    assert healthy.passed


# -- the search space in the spec --------------------------------------------------------


def test_search_ranges_parse_from_compact_yaml(tmp_path: Path) -> None:
    search = load_spec("credit_risk").estimator.search
    assert search is not None and search.timeout_s == 45
    assert search.params["learning_rate"] == SearchRange(low=0.02, high=0.3, log=True)
    assert search.params["max_leaf_nodes"].integer and not search.params["l2_regularization"].integer
    text = (Path(__file__).parents[3] / "feature_specs" / "credit_risk.yaml").read_text()
    bad = text.replace("learning_rate: [0.02, 0.3, log]", "learning_rate: [0.3, 0.02]")
    (tmp_path / "credit_risk.yaml").write_text(bad)
    with pytest.raises(SpecError, match=r"estimator\.search\.params\.learning_rate"):
        parse_spec(tmp_path / "credit_risk.yaml")


# -- the tune step -----------------------------------------------------------------------


@pytest.mark.integration
def test_search_is_reproducible_with_a_seed_and_logs_each_trial_as_a_child_run(data_dir: Path) -> None:
    from mlflow import MlflowClient

    spec = with_search(CREDIT, trials=4, timeout_s=300)
    frame = landed("credit_risk", 1500)
    first = tune.tune(spec, frame, seed=3, run_name="a")
    second = tune.tune(spec, frame, seed=3, run_name="b")
    assert first.params and first.params == second.params and first.best_cv == second.best_cv
    assert first.default_cv is not None and first.best_cv >= first.default_cv  # the spec's defaults were a trial
    client = MlflowClient()
    run = client.get_run(first.mlflow_run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{first.mlflow_run_id}'")
    assert len(children) == 4 and {c.data.tags["trial_state"] for c in children} <= {"complete", "pruned"}
    assert run.data.metrics["tune_trials"] == 4 and "tuned_params" in run.data.tags
    assert run.data.params["search.rows"] == "800"  # a sample of the 1,200 training rows; holdout untouched


@pytest.mark.integration
def test_a_tiny_time_budget_ends_the_search_within_seconds(data_dir: Path) -> None:
    spec = with_search(CREDIT, trials=10_000, timeout_s=2)
    frame = landed("credit_risk", 1500)
    tune.tune(spec, frame, trials=0)  # the MLflow store exists (creating it would take the 2 s budget)
    result = tune.tune(spec, frame, seed=0)
    # the budget plus at most the fold that was running; 10,000 trials would take hours. The slack
    # is for a loaded machine (a correctness check, not a benchmark); a machine too loaded to finish
    # the guaranteed trials within the budget runs those and starts no other.
    assert result.seconds < 2 + 18 or result.trials == tune.MIN_COMPLETE_TRIALS
    assert tune.MIN_COMPLETE_TRIALS <= result.complete <= result.trials < 10_000  # never an empty search


@pytest.mark.integration
def test_the_budget_counts_from_the_step_start(data_dir: Path) -> None:
    """The tune step passes its own start: time spent before the search (imports, reading the rows,
    opening the MLflow run) comes out of the budget; a spent budget still completes the guaranteed
    trials (the spec's defaults first), says by how much it went over, and starts no other."""
    from mlflow import MlflowClient

    spec = with_search(CREDIT, trials=10_000, timeout_s=5)
    frame = landed("credit_risk", 1500)
    result = tune.tune(spec, frame, seed=0, started=time.monotonic() - 5)
    assert result.trials == result.complete == tune.MIN_COMPLETE_TRIALS
    assert result.params and result.best_cv is not None and result.default_cv is not None
    assert result.extended_s > 0
    tags = MlflowClient().get_run(result.mlflow_run_id).data.tags
    assert tags["tuning"].startswith("searched: 3 of 3 trials complete") and "extended by" in tags["tuning"]
    assert tune.defaults_note(tags) is None  # a real search: nothing to warn about


def test_training_on_defaults_is_said_loudly() -> None:
    assert tune.defaults_note({"tuning": "searched: 3 of 3 trials complete, best trial 2"}) is None
    none = tune.defaults_note({"tuning": "none: a budget of 0 trials"})
    assert none and none.startswith("NOT TUNED") and "a budget of 0 trials" in none
    spent = tune.defaults_note({"tuning": "defaults: 0 of 1 trials completed within the search budget"})
    assert spent and spent.startswith("NOT TUNED") and "0 of 1" in spent


@pytest.mark.integration
def test_a_spec_without_search_space_trains_as_today(data_dir: Path) -> None:
    spec = CREDIT.model_copy(update={"estimator": CREDIT.estimator.model_copy(update={"search": None})})
    result = tune.tune(spec, landed("credit_risk", 1500))
    assert result.params == {} and result.trials == 0


# -- calibration inside the served pipeline ----------------------------------------------


@pytest.mark.parametrize("method", ["sigmoid"])
def test_calibrated_pipeline_converts_to_onnx_and_loads_with_our_trusted_types(method: str) -> None:
    frame = generate("credit_risk", 3000, seed=2).frame
    x, y = model_input(CREDIT, frame), labels(CREDIT, frame)
    model = calibrate.calibrated_model(CREDIT, {"max_iter": 30}, method).fit(x, y)
    assert type(model[-1]).__name__ == "CalibratedClassifierCV" and len(model[-1].calibrated_classifiers_) == 1
    assert calibrate.onnx_parity(CREDIT, model)
    assert set(skops.io.get_untrusted_types(data=skops.io.dumps(model))) <= set(SKOPS_TRUSTED_TYPES)


def test_calibration_is_chosen_by_validation_brier_and_served_only_if_onnx_agrees() -> None:
    frame = generate("credit_risk", 3000, seed=6).frame
    x, y = model_input(CREDIT, frame), labels(CREDIT, frame)
    model, chosen = calibrate.fit(CREDIT, {"max_iter": 30}, x, y, seed=0)
    assert set(chosen.brier) == {"none", "sigmoid", "isotonic"}
    ranked = sorted(chosen.brier, key=chosen.brier.__getitem__)
    assert chosen.method == next(m for m in ranked if m not in chosen.rejected)
    assert ranked.index(chosen.method) == len(chosen.rejected)  # only better ones that fail parity were skipped
    assert calibrate.onnx_parity(CREDIT, model)
