"""The training pipeline: extract -> validate -> tune -> train -> evaluate -> deploy (only if the gate passes)."""

from kfp import dsl

from pipelines.training import components

PIPELINE_NAME = "training"


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and (if the gate passes) deploy one ConstructOS model.")
def training_pipeline(
    model: str = "credit_risk",
    hyperparameters: dict = {},  # noqa: B006  (kfp needs a literal default)
    since: str = "",
    until: str = "",
    holdout_fraction: float = 0.2,
    seed: int = 0,
    canary_percent: int = -1,
    shuffle_labels: bool = False,
    tune_trials: int = -1,
    tune_timeout_s: float = -1.0,
) -> str:
    """``hyperparameters`` override the spec's estimator defaults and the tuned values; ``since``/``until`` bound the
    data window (ISO-8601, empty = all); ``canary_percent`` < 0 takes the spec's rollout share;
    ``shuffle_labels`` is a diagnostic that must yield a model the gate rejects; ``tune_trials`` /
    ``tune_timeout_s`` override the spec's search budget (negative: the spec's; 0 trials: no
    search). Returns the MLflow run id."""
    snapshot = components.extract(model=model, since=since, until=until)
    checked = components.validate(model=model, snapshot=snapshot.outputs["snapshot"])
    searched = components.tune(
        model=model,
        snapshot=snapshot.outputs["snapshot"],
        data_hash=snapshot.outputs["data_hash"],
        holdout_fraction=holdout_fraction,
        seed=seed,
        shuffle_labels=shuffle_labels,
        pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        trials=tune_trials,
        timeout_s=tune_timeout_s,
    ).after(checked)
    fitted = components.train(
        model=model,
        snapshot=snapshot.outputs["snapshot"],
        data_hash=snapshot.outputs["data_hash"],
        hyperparameters=hyperparameters,
        tuned=searched.outputs["params"],
        mlflow_run_id=searched.outputs["mlflow_run_id"],
        holdout_fraction=holdout_fraction,
        seed=seed,
        shuffle_labels=shuffle_labels,
        pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    scored = components.evaluate(
        model=model,
        snapshot=snapshot.outputs["snapshot"],
        holdout_fraction=holdout_fraction,
        seed=seed,
        mlflow_run_id=fitted.outputs["mlflow_run_id"],
        model_uri=fitted.outputs["model_uri"],
    )
    with dsl.If(scored.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        components.deploy(
            model=model,
            mlflow_run_id=fitted.outputs["mlflow_run_id"],
            model_uri=fitted.outputs["model_uri"],
            data_hash=snapshot.outputs["data_hash"],
            metrics_json=scored.outputs["metrics_json"],
            pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            canary_percent=canary_percent,
            model_card=scored.outputs["model_card"],
        )
    for task in (snapshot, checked, searched, fitted, scored):
        task.set_caching_options(False)  # new data lands under the same inputs: always rerun
    return fitted.outputs["mlflow_run_id"]
