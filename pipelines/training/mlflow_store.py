"""MLflow wiring shared by the pipeline steps: tracking URI, experiments, the registry aliases."""

from __future__ import annotations

import os
from typing import Any

from pipelines.settings import get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"


def configure() -> str:
    """Point MLflow at the platform's store; returns the tracking URI.

    MLflow's own loaders are not used to load models (their pickle switch would be process-wide):
    every step loads through :func:`predictors.loading.load_model` (skops with an allow-list).
    """
    import mlflow

    uri = get_settings().tracking_uri
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _is_local_store(uri: str) -> bool:
    """A database or file store this process writes artifacts for (a server decides its own)."""
    return not uri.startswith(("http://", "https://", "databricks"))


def experiment_id(name: str) -> str:
    """The experiment ``name``, created if needed. With a local store its artifacts go under
    ``settings.artifact_root`` (MLflow's default would be ``./mlruns`` in the working directory)."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if _is_local_store(mlflow.get_tracking_uri()):
        folder = get_settings().artifact_root / name
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another step
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def version_by_alias(name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
