"""train: the shared transform + the spec's estimator, fitted on the validated snapshot, logged to MLflow."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from feature_specs.reference import build_reference, write_reference
from feature_specs.spec import FeatureSpec
from feature_specs.transform import SKOPS_TRUSTED_TYPES
from feature_specs.validation import Validator
from pipelines.training import mlflow_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    mlflow_run_id: str
    model_uri: str
    train_rows: int
    holdout_rows: int


def model_input(spec: FeatureSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Raw rows -> the model input, through the same Validator serving uses (no skew)."""
    columns = {
        name: frame[name].to_numpy() if frame[name].dtype.kind in "fiub" else list(frame[name])
        for name in spec.feature_names
        if name in frame
    }
    return Validator(spec, max_batch=max(len(frame), 1)).frame(columns)


def labels(spec: FeatureSpec, frame: pd.DataFrame) -> np.ndarray:
    y = frame[spec.target.name]
    return y.astype(bool).to_numpy() if spec.is_classifier else y.astype(np.float64).to_numpy()


def scores(spec: FeatureSpec, model: Any, x: pd.DataFrame) -> np.ndarray:
    """P(positive) for classifiers, the prediction for regression."""
    if spec.is_classifier:
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def hyperparameter_values(given: dict[str, Any]) -> dict[str, Any]:
    """KFP passes a dict parameter as a protobuf Struct, whose numbers are all floats: give
    integral values back their int type (``max_iter=30.0`` is refused by scikit-learn)."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in given.items()}


def _requirements() -> list[str]:
    """What loading the model needs, pinned (MLflow's inference exports the whole project)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "skops", "numpy", "pandas")]


def split(
    spec: FeatureSpec, frame: pd.DataFrame, holdout_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reproducible train/holdout split (stratified for classifiers)."""
    stratify = labels(spec, frame) if spec.is_classifier else None
    train, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def train(
    spec: FeatureSpec,
    frame: pd.DataFrame,
    holdout_path: Path,
    *,
    hyperparameters: dict[str, Any] | None = None,
    tuned: dict[str, Any] | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    shuffle_labels: bool = False,
    data_hash: str = "",
    pipeline_run_id: str = "",
    mlflow_run_id: str = "",
) -> TrainResult:
    """Fit on a split of ``frame``, write the holdout rows to ``holdout_path``, log the run and model.

    Parameters: the spec's, then the tune step's (``tuned``), then ``hyperparameters`` given to
    the run. Classifiers are calibrated where that helps (:mod:`.calibrate`). ``mlflow_run_id``
    continues the run the tune step opened. ``shuffle_labels`` permutes the training labels
    (never the holdout's): a diagnostic that must produce a model the gate rejects.
    """
    import mlflow
    from mlflow.models import infer_signature

    from pipelines.training.steps import calibrate

    chosen = {**hyperparameter_values(tuned or {}), **hyperparameter_values(hyperparameters or {})}
    params = {**spec.estimator.params, **chosen}
    train_rows, holdout = split(spec, frame, holdout_fraction, seed)
    holdout_path.parent.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(holdout_path, index=False)
    x, y = model_input(spec, train_rows), labels(spec, train_rows)
    if shuffle_labels:
        y = np.random.default_rng(seed).permutation(y)
    model, calibration = calibrate.fit(spec, chosen, x, y, seed)
    train_scores = scores(spec, model, x)
    shown = f"{params}, calibration {calibration.method}"
    log.info("train: fitted %s on %s rows (%s)", spec.estimator.kind, f"{len(x):,}", shown)

    mlflow_store.configure()
    tags = {
        "spec_name": spec.name,
        "spec_version": spec.version,
        "data_hash": data_hash,
        "pipeline_run_id": pipeline_run_id,
        "shuffle_labels": str(shuffle_labels).lower(),
    }
    resume = {"run_id": mlflow_run_id} if mlflow_run_id else {"run_name": pipeline_run_id or None}
    with (
        mlflow_store.active_experiment(spec.name) as experiment,
        mlflow.start_run(experiment_id=experiment, tags=tags, **resume) as run,
    ):
        mlflow.log_metrics({f"calibration_brier_{k}": v for k, v in calibration.brier.items()})
        mlflow.set_tags({"calibration": calibration.method, "calibration_rejected": ",".join(calibration.rejected)})
        mlflow.log_params(
            {
                **params,
                "calibration": calibration.method,
                "holdout_fraction": holdout_fraction,
                "seed": seed,
                "shuffle_labels": shuffle_labels,
                "train_rows": len(x),
                "holdout_rows": len(holdout),
            }
        )
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x.head(200), train_scores[:200]),
            input_example=x.head(5),
            metadata={
                "spec_name": spec.name,
                "spec_version": spec.version,
                "data_hash": data_hash,
                "pipeline_run_id": pipeline_run_id,
            },
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_requirements(),
        )
        with tempfile.TemporaryDirectory() as tmp:
            reference = write_reference(build_reference(spec, x, train_scores), Path(tmp))
            mlflow.MlflowClient().log_model_artifact(info.model_id, str(reference))
    log.info("train: MLflow run %s, model %s", run.info.run_id, info.model_uri)
    return TrainResult(run.info.run_id, info.model_uri, len(x), len(holdout))
