# mypy: disable-error-code="valid-type"
# (kfp reads the NamedTuple(...) / OutputPath(...) annotations, which mypy does not understand)
"""Thin kfp components around ``pipelines.training.steps``: artifacts in, artifacts out, logic elsewhere.

Each body imports what it needs (kfp runs the function's source on its own). The base image is
the platform image, which contains this project and kfp, so no packages are installed at run time.
"""

import functools
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output, OutputPath

from pipelines.settings import get_settings

component = functools.partial(dsl.component, base_image=get_settings().image, install_kfp_package=False)


@component
def extract(model: str, since: str, until: str, snapshot: Output[Dataset]) -> NamedTuple(
    "ExtractOutputs", [("rows", int), ("data_hash", str)]
):
    """Snapshot the model's landed rows (optionally ``[since, until)``) with a content hash."""
    from pathlib import Path

    from pipelines.settings import get_settings
    from pipelines.training import artifacts
    from pipelines.training.steps import extract, log_to_stdout

    log_to_stdout()
    result = extract.extract(get_settings().landing_store, model, Path(snapshot.path), since=since, until=until)
    uri = artifacts.publish_snapshot(model, result.path, result.data_hash)
    snapshot.metadata.update({"rows": result.rows, "data_hash": result.data_hash, "model": model, "store_uri": uri})
    return result.rows, result.data_hash


@component
def validate(model: str, snapshot: Input[Dataset], result: Output[Artifact], data_docs: Output[HTML]) -> None:
    """Run the spec's great-expectations suite; fail (stop the run) listing the failed expectations.
    ``data_docs``: the validation page, self-contained; the whole site goes to the artifact store."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from feature_specs import load_spec
    from pipelines.training import artifacts
    from pipelines.training.steps import log_to_stdout, ui, validate
    from pipelines.training.steps.extract import content_hash

    log_to_stdout()
    frame = pd.read_parquet(snapshot.path)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        report = validate.validate(load_spec(model), frame, Path(result.path), site)
        Path(data_docs.path).write_text(ui.data_docs_page(site), encoding="utf-8")
        data_hash = snapshot.metadata.get("data_hash") or content_hash(frame)
        docs = artifacts.publish_dir("data-docs", model, data_hash, site)
    result.metadata.update({"success": report.success, "failures": len(report.failures), "data_docs_uri": docs})
    data_docs.metadata["site_uri"] = docs
    validate.raise_if_failed(report, model)


@component
def tune(
    model: str,
    snapshot: Input[Dataset],
    data_hash: str,
    holdout_fraction: float,
    seed: int,
    shuffle_labels: bool,
    pipeline_run_id: str,
    trials: int,
    timeout_s: float,
    search: Output[Metrics],
) -> NamedTuple("TuneOutputs", [("mlflow_run_id", str), ("params", dict)]):
    """Open the run's MLflow run; search the spec's space with cross-validation on the training
    split (each trial a child run). Without a search space: no trials, empty params. The search's
    time budget counts from here: the step's imports and reading the rows are inside it."""
    import time

    started = time.monotonic()
    from pathlib import Path

    import pandas as pd

    from feature_specs import load_spec
    from pipelines.training.steps import log_to_stdout, tune

    log_to_stdout()
    tags = {
        "spec_name": model,
        "data_hash": data_hash,
        "pipeline_run_id": pipeline_run_id,
        "shuffle_labels": str(shuffle_labels).lower(),
    }
    out = tune.tune(
        load_spec(model),
        pd.read_parquet(Path(snapshot.path)),
        holdout_fraction=holdout_fraction,
        seed=seed,
        run_name=pipeline_run_id,
        tags=tags,
        trials=trials,
        timeout_s=timeout_s,
        started=started,
    )
    search.log_metric("trials", out.trials)
    search.log_metric("seconds", round(out.seconds, 2))
    for name, value in (("best_cv", out.best_cv), ("spec_defaults_cv", out.default_cv)):
        if value is not None:
            search.log_metric(name, value)
    return out.mlflow_run_id, out.params


@component
def train(
    model: str,
    snapshot: Input[Dataset],
    data_hash: str,
    hyperparameters: dict,
    tuned: dict,
    mlflow_run_id: str,
    holdout_fraction: float,
    seed: int,
    shuffle_labels: bool,
    pipeline_run_id: str,
    holdout: Output[Dataset],
) -> NamedTuple("TrainOutputs", [("mlflow_run_id", str), ("model_uri", str)]):
    """Fit the spec's model (tuned, calibrated) and log it with its reference statistics to MLflow."""
    from pathlib import Path

    import pandas as pd

    from feature_specs import load_spec
    from pipelines.training import artifacts
    from pipelines.training.steps import log_to_stdout, train

    log_to_stdout()
    spec = load_spec(model)
    frame = pd.read_parquet(snapshot.path)
    out = train.train(
        spec,
        frame,
        Path(holdout.path),
        hyperparameters=hyperparameters,
        tuned=tuned,
        holdout_fraction=holdout_fraction,
        seed=seed,
        shuffle_labels=shuffle_labels,
        data_hash=data_hash,
        pipeline_run_id=pipeline_run_id,
        mlflow_run_id=mlflow_run_id,
    )
    artifacts.record_snapshot(out.mlflow_run_id, model, frame, data_hash, target=spec.target.name)
    holdout.metadata.update({"rows": out.holdout_rows})
    return out.mlflow_run_id, out.model_uri


@component
def evaluate(
    model: str,
    snapshot: Input[Dataset],
    holdout_fraction: float,
    seed: int,
    mlflow_run_id: str,
    model_uri: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    plots: Output[HTML],
    model_card: Output[Markdown],
    reasons: OutputPath(str),
    metrics_json: OutputPath(str),
) -> bool:
    """Holdout metrics with bootstrap intervals next to the baselines and the best achievable on the
    same rows, plots, the model card, and the gate (spec floors, no worse than the baselines and
    @champion). ``classification``: the ROC curve and the confusion matrix (classifiers only).

    Returns whether the gate passed: a single output, because kfp.local resolves a ``dsl.If`` on
    ``task.output`` but not on a named output of a NamedTuple.
    """
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    from feature_specs import load_spec
    from pipelines.settings import get_settings
    from pipelines.training import artifacts
    from pipelines.training.steps import evaluate, log_to_stdout, ui

    log_to_stdout()
    with tempfile.TemporaryDirectory() as tmp:
        out = evaluate.evaluate(
            load_spec(model),
            pd.read_parquet(snapshot.path),
            mlflow_run_id,
            model_uri,
            Path(tmp),
            holdout_fraction=holdout_fraction,
            seed=seed,
            data_dir=get_settings().data_dir,
            data_hash=snapshot.metadata.get("data_hash", ""),
            snapshot_uri=snapshot.metadata.get("store_uri", ""),
        )
        plots.metadata["store_uri"] = artifacts.publish_dir("plots", model, mlflow_run_id, Path(tmp))
    Path(plots.path).write_text(out.page, encoding="utf-8")
    Path(model_card.path).write_text(out.card, encoding="utf-8")
    if out.roc is not None and out.confusion is not None:
        classification.log_roc_curve(*out.roc)
        classification.log_confusion_matrix(ui.CLASSES, out.confusion)
    for name, value in out.figures.items():
        metrics.log_metric(name, value)
    metrics.log_metric("gate_passed", float(out.gate.passed))
    Path(reasons).write_text("; ".join(out.gate.reasons))
    Path(metrics_json).write_text(json.dumps(out.metrics))
    return out.gate.passed


@component
def deploy(
    model: str,
    mlflow_run_id: str,
    model_uri: str,
    data_hash: str,
    metrics_json: str,
    pipeline_run_id: str,
    canary_percent: int,
    model_card: Input[Markdown],
    inference_service: Output[Artifact],
) -> NamedTuple("DeployOutputs", [("version", str), ("alias", str)]):
    """Register the version (alias champion/challenger, the model card as its description) and
    render/apply its InferenceService."""
    import json
    from pathlib import Path

    from feature_specs import load_spec
    from pipelines.settings import get_settings
    from pipelines.training.steps import deploy, log_to_stdout

    log_to_stdout()
    spec = load_spec(model)
    registration = deploy.register_version(
        spec,
        model_uri,
        mlflow_run_id=mlflow_run_id,
        data_hash=data_hash,
        pipeline_run_id=pipeline_run_id,
        metrics=json.loads(metrics_json),
        description=Path(model_card.path).read_text(encoding="utf-8"),
    )
    outcome = deploy.deploy_isvc(
        spec, registration, Path(inference_service.path), canary_percent=canary_percent, image=get_settings().image
    )
    inference_service.metadata.update({"version": registration.version, "alias": registration.alias, "apply": outcome})
    return registration.version, registration.alias
