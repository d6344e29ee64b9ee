"""The training steps as plain functions: extract, validate, gate, metrics, deploy rendering, launch."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_specs import Validator, load_spec
from feature_specs.synthetic import generate
from pipelines.demo import landing_frame
from pipelines.settings import get_settings
from pipelines.streaming.landing.folder import write_folder_part
from pipelines.streaming.retraining import launch
from pipelines.training.run import TaskLogFilter
from pipelines.training.steps import deploy
from pipelines.training.steps.evaluate import gate
from pipelines.training.steps.extract import content_hash, extract
from pipelines.training.steps.metrics import compute_metrics
from pipelines.training.steps.train import model_input
from pipelines.training.submit import run_name, submit

SPEC = load_spec("credit_risk")


@pytest.fixture(scope="module")
def landed() -> pd.DataFrame:
    return landing_frame(SPEC, generate("credit_risk", 1500, seed=3).frame, seed=3)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


# -- synthetic landing rows -------------------------------------------------------------


def test_landing_frame_has_no_pii_and_passes_the_contract() -> None:
    raw = generate("credit_risk", 200, seed=0).frame
    frame = landing_frame(SPEC, raw)
    assert len(frame) == 200
    assert not set(SPEC.pii_names) & set(frame.columns)
    assert list(frame.columns[:3]) == ["event_id", "occurred_at", "landed_at"]
    Validator(SPEC, max_batch=len(frame)).frame(frame[SPEC.feature_names])  # raises on any violation


# -- extract ----------------------------------------------------------------------------


def test_content_hash_ignores_row_and_column_order_but_not_values(landed: pd.DataFrame) -> None:
    shuffled = landed.sample(frac=1, random_state=0)[landed.columns[::-1]]
    assert content_hash(shuffled) == content_hash(landed)
    changed = landed.copy()
    changed.loc[5, "avg_days_to_pay"] += 1
    assert content_hash(changed) != content_hash(landed)


def test_extract_snapshot_with_time_window(landed: pd.DataFrame, tmp_path: Path) -> None:
    write_folder_part(tmp_path, "credit_risk", landed.iloc[:1000])
    write_folder_part(tmp_path, "credit_risk", landed.iloc[900:])  # overlap: duplicates by event id
    everything = extract(tmp_path, "credit_risk", tmp_path / "all.parquet")
    assert everything.rows == len(landed)
    assert pd.read_parquet(everything.path).shape == landed.shape
    since, until = landed["occurred_at"].iloc[100], landed["occurred_at"].iloc[300]
    window = extract(tmp_path, "credit_risk", tmp_path / "w.parquet", since=since, until=until)
    assert window.rows == 200 and window.data_hash != everything.data_hash


def test_extract_without_data_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no landed rows for 'credit_risk'"):
        extract(tmp_path, "credit_risk", tmp_path / "s.parquet")


# -- validate (great expectations) ------------------------------------------------------


def _validate(frame: pd.DataFrame, tmp_path: Path) -> Any:
    from pipelines.training.steps.validate import validate

    return validate(SPEC, frame, tmp_path / "result.json", tmp_path / "docs")


def test_clean_snapshot_passes_and_writes_result_and_data_docs(landed: pd.DataFrame, tmp_path: Path) -> None:
    report = _validate(landed, tmp_path)
    assert report.success, report.failures
    assert '"success": true' in (tmp_path / "result.json").read_text()
    assert (tmp_path / "docs" / "index.html").is_file()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))


def test_poisoned_snapshot_fails_naming_every_problem(landed: pd.DataFrame, tmp_path: Path) -> None:
    from pipelines.training.steps.validate import ValidationFailed, raise_if_failed

    poisoned = landed.copy()
    poisoned["tax_id"] = "DE123456789"
    poisoned.loc[7, "late_payment_ratio_12m"] = 3.5
    poisoned.loc[8, "contract_type"] = "handshake"
    poisoned.loc[9, "defaulted_90d"] = None
    report = _validate(poisoned, tmp_path)
    assert not report.success
    text = "\n".join(report.failures)
    assert "tax_id" in text and "late_payment_ratio_12m" in text and "handshake" in text and "defaulted_90d" in text
    with pytest.raises(ValidationFailed, match="failed 4 expectation"):
        raise_if_failed(report, "credit_risk")


def test_too_few_rows_and_too_many_nulls_fail(landed: pd.DataFrame, tmp_path: Path) -> None:
    few = landed.iloc[:50].copy()
    few["credit_utilisation"] = np.nan
    failures = "\n".join(_validate(few, tmp_path).failures)
    assert "expect_table_row_count_to_be_between" in failures
    assert "credit_utilisation" in failures


# -- train input, metrics and the gate --------------------------------------------------


def test_model_input_is_the_serving_validator_output(landed: pd.DataFrame) -> None:
    x = model_input(SPEC, landed)
    assert list(x.columns) == SPEC.feature_names
    assert x["contract_type"].notna().all()  # constant imputation done, as at serving
    assert x["annual_revenue_eur"].isna().any()  # median imputation left to the transform
    assert x["retention_held"].isin([0.0, 1.0]).all()


def test_classifier_and_regression_metrics() -> None:
    y = np.array([0, 0, 1, 1], dtype=bool)
    perfect = compute_metrics(SPEC, y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect == {"roc_auc": 1.0, "pr_auc": 1.0, "f1": 1.0, "brier": pytest.approx(0.025)}
    reg = compute_metrics(load_spec("stock_demand"), np.array([10.0, 20.0]), np.array([12.0, 18.0]))
    assert reg == {"mae": 2.0, "rmse": 2.0, "mape": pytest.approx(0.15)}


def test_gate_floors_ceilings_and_champion_tolerance() -> None:
    good = {"roc_auc": 0.80, "pr_auc": 0.30, "f1": 0.3, "brier": 0.06}
    assert gate(SPEC, good, None).passed
    low = gate(SPEC, {**good, "roc_auc": 0.70}, None)
    assert not low.passed and "roc_auc 0.7000 < floor 0.72" in low.reasons
    assert not gate(SPEC, {**good, "brier": 0.2}, None).passed
    assert gate(SPEC, good, {"roc_auc": 0.805}).passed  # 0.6% worse: inside the 1% tolerance
    worse = gate(SPEC, good, {"roc_auc": 0.82})
    assert not worse.passed and "worse than tolerance" in worse.reasons[-1]
    demand = load_spec("stock_demand")  # lower is better
    assert gate(demand, {"mae": 50.0}, {"mae": 49.5}).passed
    assert not gate(demand, {"mae": 52.0}, {"mae": 49.5}).passed


# -- deploy: the InferenceService -------------------------------------------------------


def test_render_isvc_sets_the_version_and_canary_and_keeps_the_rest() -> None:
    base = deploy.find_isvc("credit_risk") or deploy.template("credit_risk", "img:1")
    isvc = deploy.render_isvc(base, "credit_risk", "7", 25)
    container = isvc["spec"]["predictor"]["containers"][0]
    assert [a for a in container["args"] if a.startswith("--model_uri")] == ["--model_uri=models:/credit_risk/7"]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert base["spec"]["predictor"].get("canaryTrafficPercent") is None  # the base is not mutated
    assert "canaryTrafficPercent" not in deploy.render_isvc(base, "credit_risk", "1", None)["spec"]["predictor"]
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        deploy.render_isvc(base, "credit_risk", "7", 101)


def test_find_isvc_in_manifests_and_template_fallback(tmp_path: Path) -> None:
    assert deploy.find_isvc("credit_risk", tmp_path) is None
    (tmp_path / "isvc.yaml").write_text(
        yaml.safe_dump_all([{"kind": "ConfigMap"}, deploy.template("lead_score", "i:1")])
    )
    found = deploy.find_isvc("lead_score", tmp_path)
    assert found is not None and found["metadata"]["name"] == "lead-score"
    assert deploy.find_isvc("credit_risk", tmp_path) is None


def test_deploy_isvc_writes_manifest_and_skips_apply_off_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    out = tmp_path / "isvc.yaml"
    outcome = deploy.deploy_isvc(SPEC, deploy.Registration("3", "challenger"), out, canary_percent=-1, image="i:1")
    assert outcome.startswith("skipped")
    rendered = yaml.safe_load(out.read_text())
    assert rendered["spec"]["predictor"]["canaryTrafficPercent"] == SPEC.rollout.canary_percent
    first = deploy.deploy_isvc(SPEC, deploy.Registration("1", "champion"), out, canary_percent=30, image="i:1")
    assert first.startswith("skipped")
    assert "canaryTrafficPercent" not in yaml.safe_load(out.read_text())["spec"]["predictor"]


# -- launching: one run per key ---------------------------------------------------------


def test_launch_same_key_runs_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Summary:
        pipeline_run_id = "training-123"

    def fake_run_local(model: str, **params: Any) -> Summary:
        calls.append((model, params))
        return Summary()

    monkeypatch.setattr("pipelines.training.run.run_local", fake_run_local)
    assert launch.launch_training("credit_risk", key="finance/batch-1", seed=1) == "training-123"
    assert launch.launch_training("credit_risk", key="finance/batch-1", seed=1) == "training-123"
    assert launch.launch_training("credit_risk", key="finance/batch-2") == "training-123"
    assert calls == [("credit_risk", {"seed": 1}), ("credit_risk", {})]


def test_launch_failed_key_is_not_retried(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(model: str, **params: Any) -> Any:
        raise RuntimeError("validate failed")

    monkeypatch.setattr("pipelines.training.run.run_local", failing)
    with pytest.raises(RuntimeError):
        launch.launch_training("credit_risk", key="k")
    with pytest.raises(RuntimeError, match="failed before: validate failed"):  # not run again
        launch.launch_training("credit_risk", key="k")


class FakeKfpClient:
    """Just enough of kfp.Client to check how submit() uses it."""

    def __init__(self) -> None:
        self.runs: dict[str, str] = {}

    def create_experiment(self, name: str) -> Any:
        return type("Experiment", (), {"experiment_id": f"exp-{name}"})()

    def list_runs(self, *, experiment_id: str, filter: str, page_size: int) -> Any:
        import json

        wanted = json.loads(filter)["predicates"][0]["stringValue"]
        runs = [type("Run", (), {"run_id": rid})() for name, rid in self.runs.items() if name == wanted]
        return type("Response", (), {"runs": runs or None})()

    def create_run_from_pipeline_func(self, func: Any, *, arguments: dict, run_name: str, **kw: Any) -> Any:
        assert arguments["model"] == "credit_risk" and kw["enable_caching"] is False
        self.runs[run_name] = f"run-{len(self.runs)}"
        return type("Result", (), {"run_id": self.runs[run_name]})()


def test_submit_reuses_the_run_of_a_key() -> None:
    client = FakeKfpClient()
    first = submit("credit_risk", key="Finance Batch #1", client=client, seed=2)
    assert submit("credit_risk", key="Finance Batch #1", client=client) == first
    assert submit("credit_risk", key="batch-2", client=client) != first
    assert list(client.runs) == ["credit-risk-finance-batch-1", "credit-risk-batch-2"]
    assert len(run_name("credit_risk", "x" * 300)) <= 80


def test_task_log_filter_drops_executor_boilerplate() -> None:
    out = io.StringIO()
    quiet = TaskLogFilter(out)
    quiet.write('    [KFP Executor 1 INFO]: Got executor_input:\n    {\n        "inputs": {}\n    }\n')
    quiet.write("    extract: 10 rows\n    Wrote executor output file to x.json.\n09:00 - INFO - Task 'extract' fin")
    quiet.close()
    assert out.getvalue() == "    extract: 10 rows\n09:00 - INFO - Task 'extract' fin"


def test_hyperparameters_from_a_kfp_struct_get_their_int_type_back() -> None:
    from pipelines.training.steps.train import hyperparameter_values

    values = hyperparameter_values({"max_iter": 30.0, "learning_rate": 0.05, "loss": "log_loss"})
    assert values == {"max_iter": 30, "learning_rate": 0.05, "loss": "log_loss"}
    assert type(values["max_iter"]) is int
