"""The training pipeline: the compiled IR (DAG, edges, the gate condition) and real kfp.local runs
against a real MLflow sqlite store in a temporary data directory."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feature_specs import load_spec, spec_names
from pipelines.demo import land_synthetic
from pipelines.settings import get_settings
from pipelines.streaming.landing.folder import write_folder_part
from pipelines.training.compile import compile_all

MODEL = "credit_risk"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ir")
    return {path.stem: yaml.safe_load(path.read_text()) for path in compile_all(out)}


def test_compile_writes_a_pipeline_per_model_and_a_generic_one(compiled: dict[str, dict[str, Any]]) -> None:
    assert set(compiled) == {"training", *spec_names()}
    for model in spec_names():
        params = compiled[model]["root"]["inputDefinitions"]["parameters"]
        assert params["model"]["defaultValue"] == model
        assert params["hyperparameters"]["defaultValue"] == {}  # the spec's parameters, tuned where it has a space
        assert compiled[model]["pipelineInfo"]["name"] == f"{model.replace('_', '-')}-training"


def test_dag_tasks_edges_and_gate_condition(compiled: dict[str, dict[str, Any]]) -> None:
    ir = compiled["training"]
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == {"extract", "validate", "tune", "train", "evaluate", "condition-1"}
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["extract"] == set()
    assert deps["validate"] == {"extract"}
    assert deps["tune"] == {"extract", "validate"}  # nothing trains before validate succeeded
    assert deps["train"] == {"extract", "tune"}
    assert deps["evaluate"] == {"extract", "train"}
    condition = tasks["condition-1"]
    assert condition["taskInfo"]["name"] == "gate-passed"
    assert (
        condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    inner = ir["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"deploy"}
    for name in ("extract", "validate", "tune", "train", "evaluate"):
        assert tasks[name]["cachingOptions"] == {}  # caching off: new data lands under the same inputs


def test_components_run_the_pinned_platform_image(compiled: dict[str, dict[str, Any]]) -> None:
    executors = compiled["training"]["deploymentSpec"]["executors"]
    assert len(executors) == 6
    image = get_settings().image
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == image
        assert "pip install" not in " ".join(container["command"])  # the image already has kfp and the project


def test_what_the_kfp_ui_renders_is_typed(compiled: dict[str, dict[str, Any]]) -> None:
    """The KFP UI draws ROC curves and confusion matrices only from ClassificationMetrics and shows
    pages only from HTML and Markdown artifacts."""
    components = compiled["training"]["components"]

    def artifacts(component: str, side: str) -> dict[str, str]:
        found = components[f"comp-{component}"][side]["artifacts"]
        return {name: spec["artifactType"]["schemaTitle"] for name, spec in found.items()}

    assert artifacts("evaluate", "outputDefinitions") == {
        "metrics": "system.Metrics",
        "classification": "system.ClassificationMetrics",
        "plots": "system.HTML",
        "model_card": "system.Markdown",
    }
    assert artifacts("validate", "outputDefinitions")["data_docs"] == "system.HTML"
    assert artifacts("deploy", "inputDefinitions") == {"model_card": "system.Markdown"}  # its version's description
    condition = compiled["training"]["root"]["dag"]["tasks"]["condition-1"]["inputs"]["artifacts"]
    assert condition["pipelinechannel--evaluate-model_card"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model_card",
        "producerTask": "evaluate",
    }


# -- real runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir with landed credit_risk rows; MLflow on sqlite inside it."""
    root = tmp_path_factory.mktemp("platform")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONSTRUCTOS_DATA_DIR", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("CONSTRUCTOS_MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        land_synthetic(MODEL, 4000, seed=7)
        yield root
    get_settings.cache_clear()


#: anything that makes a page fetch from elsewhere
EXTERNAL = re.compile(r"""(?:src|href)=["']?(?:https?:)?//|url\(\s*['"]?(?:https?:)?//|<script\b""", re.IGNORECASE)


def _output_artifacts(task_dir: Path) -> dict[str, dict[str, Any]]:
    """A task's output artifacts by name (uri, metadata) as kfp.local recorded them."""
    written = json.loads((task_dir / "executor_output.json").read_text())
    return {name: entry["artifacts"][0] for name, entry in written.get("artifacts", {}).items()}


def _client() -> Any:
    from mlflow import MlflowClient

    from pipelines.training import mlflow_store

    mlflow_store.configure()
    return MlflowClient()


@pytest.mark.integration
def test_full_run_registers_a_champion_with_lineage_and_artifacts(platform: Path) -> None:
    from pipelines.training.run import run_local

    summary = run_local(MODEL, hyperparameters={"max_iter": 60}, tune_trials=0)  # the spec's parameters, no search
    assert summary.gate_passed, summary.gate_reasons
    assert "vs untuned default estimator" in summary.gate_reasons
    assert (summary.version, summary.alias) == ("1", "champion")
    client = _client()
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    tags = version.tags
    assert tags["pipeline_run_id"] == summary.pipeline_run_id and summary.pipeline_run_id.startswith("training-")
    assert len(tags["data_hash"]) == 64 and tags["spec_version"] == "1.0.0"
    assert set(json.loads(tags["metrics"])) == {"roc_auc", "pr_auc", "f1", "brier"}

    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1"))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert mlmodel["metadata"] == {
        "spec_name": MODEL,
        "spec_version": "1.0.0",
        "data_hash": tags["data_hash"],
        "pipeline_run_id": summary.pipeline_run_id,
    }
    assert mlmodel["signature"]["inputs"] and (local / "input_example.json").is_file()
    reference = json.loads((local / "reference.json").read_text())
    assert reference["rows"] == 3200 and set(reference["features"]) == set(load_spec(MODEL).feature_names)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["max_iter"] == "60"
    assert run.data.tags["gate_passed"] == "true" and run.data.tags["tuning"].startswith("none")
    metrics = run.data.metrics  # ours, the baseline and the best achievable on the same rows, with intervals
    for name in ("roc_auc", "baseline_roc_auc", "best_roc_auc", "gap_to_best_pct", "gap_to_baseline_pct"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    plots = {Path(a.path).name for a in client.list_artifacts(summary.mlflow_run_id, "plots")}
    assert plots == {"roc.png", "calibration.png", "feature_importance.png"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith((platform / "mlflow" / "artifacts").resolve().as_uri())

    isvc = next((platform / "kfp" / summary.pipeline_run_id / "deploy").glob("inference_service"))
    rendered = yaml.safe_load(isvc.read_text())
    assert f"--model_uri=models:/{MODEL}/1" in rendered["spec"]["predictor"]["containers"][0]["args"]

    # what the KFP UI shows of the run: the files kfp.local wrote, with the metadata keys the UI reads
    run_dir = platform / "kfp" / summary.pipeline_run_id
    evaluate = _output_artifacts(run_dir / "evaluate")
    roc = evaluate["classification"]["metadata"]["confidenceMetrics"]
    assert 10 < len(roc) <= 200
    assert all(set(point) == {"confidenceThreshold", "recall", "falsePositiveRate"} for point in roc)
    assert roc[-1]["recall"] == roc[-1]["falsePositiveRate"] == 1.0
    matrix = evaluate["classification"]["metadata"]["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == ["false", "true"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 800  # every holdout row, at the gate's threshold
    assert evaluate["metrics"]["metadata"]["roc_auc"] == pytest.approx(metrics["roc_auc"])
    page = Path(evaluate["plots"]["uri"]).read_text()
    assert page.count("data:image/png;base64,") == 3 and not EXTERNAL.search(page)
    card = Path(evaluate["model_card"]["uri"]).read_text()
    assert card.startswith(f"# {MODEL}: model card") and tags["data_hash"] in card and "## Gate: PASSED" in card
    assert "NOT TUNED" in card and "NOT TUNED" in summary.gate_reasons  # no search ran (0 trials): said loudly
    assert version.description == card  # the registered version carries the card
    assert summary.card_path().read_text() == card and f"  model card: {summary.card_path()}" in summary.lines()
    assert client.download_artifacts(summary.mlflow_run_id, "model_card.md")  # and the run too
    docs = _output_artifacts(run_dir / "validate")["data_docs"]
    docs_page = Path(docs["uri"]).read_text()
    assert "Evaluated Expectations" in docs_page and not EXTERNAL.search(docs_page)
    assert docs["metadata"]["site_uri"].endswith(tags["data_hash"])  # the whole site, in the artifact store


@pytest.mark.integration
def test_a_second_better_run_becomes_challenger_and_champion_stays(platform: Path) -> None:
    from pipelines.training.run import run_local

    summary = run_local(MODEL, tune_trials=3, tune_timeout_s=60.0)  # a small search: each trial a child run
    assert summary.gate_passed and (summary.version, summary.alias) == ("2", "challenger"), summary.gate_reasons
    assert "vs champion" in summary.gate_reasons
    client = _client()
    assert client.get_model_version_by_alias(MODEL, "champion").version == 1
    assert client.get_model_version_by_alias(MODEL, "challenger").version == 2
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.metrics["champion_roc_auc"] > 0 and run.data.metrics["tune_trials"] == 3
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == 3 and all("learning_rate" in child.data.params for child in children)
    isvc = yaml.safe_load((platform / "kfp" / summary.pipeline_run_id / "deploy" / "inference_service").read_text())
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == load_spec(MODEL).rollout.canary_percent


@pytest.mark.integration
def test_shuffled_labels_are_rejected_by_the_gate_and_get_no_alias(platform: Path) -> None:
    from pipelines.training.run import run_local

    before = {v.version for v in _client().search_model_versions(f"name='{MODEL}'")}
    summary = run_local(MODEL, shuffle_labels=True, tune_trials=0)
    assert not summary.gate_passed
    assert "< floor 0.72" in summary.gate_reasons and "loses beyond tolerance" in summary.gate_reasons
    assert summary.version is None and summary.alias is None
    assert not (platform / "kfp" / summary.pipeline_run_id / "deploy").exists()  # deploy never ran
    client = _client()
    assert {v.version for v in client.search_model_versions(f"name='{MODEL}'")} == before
    assert client.get_run(summary.mlflow_run_id).data.tags["gate_passed"] == "false"
    card = (platform / "kfp" / summary.pipeline_run_id / "evaluate" / "model_card").read_text()
    assert "## Gate: FAILED" in card and "< floor 0.72" in card  # the card says why it was not deployed


@pytest.mark.integration
def test_poisoned_snapshot_stops_at_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.demo import landing_frame
    from pipelines.training.run import run_local

    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    from feature_specs.synthetic import generate

    frame = landing_frame(load_spec(MODEL), generate(MODEL, 1500, seed=9).frame, seed=9)
    frame.loc[3, "avg_days_to_pay"] = 9999.0
    frame["tax_id"] = "DE000000000"
    write_folder_part(get_settings().landing_dir, MODEL, frame)
    try:
        with pytest.raises(RuntimeError, match="validate"):
            run_local(MODEL)
        logs = capsys.readouterr().out
        assert "avg_days_to_pay" in logs and "tax_id" in logs
        run_dir = next((tmp_path / "kfp").iterdir())
        assert (run_dir / "validate" / "result").is_file()
        assert not (run_dir / "train").exists()
        import mlflow

        from pipelines.training import mlflow_store

        mlflow_store.configure()
        assert mlflow.search_runs(search_all_experiments=True).empty  # nothing was trained
    finally:
        get_settings.cache_clear()
