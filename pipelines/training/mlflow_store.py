"""MLflow wiring shared by the pipeline steps: tracking URI, experiments, the registry aliases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.settings import get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"


def configure() -> str:
    """Point MLflow at the platform's store; returns the tracking URI.

    MLflow's own loaders are not used to load models (their pickle switch would be process-wide):
    every step loads through :func:`predictors.runtime.loading.load_model` (skops with an allow-list).
    """
    import mlflow

    uri = get_settings().tracking_uri
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    return uri


def check_server(uri: str, timeout: float = 10) -> None:
    """Fail fast, naming the cause, when a tracking server cannot serve: it is unreachable, or
    its backend store (PostgreSQL) or artifact store (S3) is down. MLflow's own client would retry
    for minutes and then report only "too many 503 error responses"."""
    import requests

    from pipelines.storage import StoreUnavailable

    probes = {
        "its backend store (runs, registry)": "/api/2.0/mlflow/experiments/search?max_results=1",
        "its artifact store": "/api/2.0/mlflow-artifacts/artifacts?path=",
    }
    for what, path in probes.items():
        try:
            answer = requests.get(uri.rstrip("/") + path, timeout=timeout)
        except requests.Timeout as exc:  # it answered nothing in time: the store behind it hangs
            raise StoreUnavailable(
                f"MLflow tracking server {uri} cannot reach {what}: no answer in {timeout:g} s"
            ) from exc
        except requests.RequestException as exc:
            raise StoreUnavailable(f"MLflow tracking server {uri} is unreachable: {exc}") from exc
        if answer.status_code == 404 and "artifacts" in path:
            continue  # a server without --serve-artifacts: clients write artifacts themselves
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("message", "")
            except ValueError:
                detail = "(no details: see the server's log)"
            raise StoreUnavailable(
                f"MLflow tracking server {uri} cannot reach {what}: HTTP {answer.status_code} {detail}".rstrip()
            )


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


@contextmanager
def active_experiment(name: str) -> Iterator[str]:
    """Make the experiment ``name`` MLflow's active one for the block (MLflow 3 files logged models
    under it); yields its id. ``mlflow.set_experiment`` also exports ``MLFLOW_EXPERIMENT_ID`` to every
    later child process, which then fails against another tracking server: both are restored."""
    import mlflow
    from mlflow.tracking import fluent

    exported, active = os.environ.get("MLFLOW_EXPERIMENT_ID"), fluent._active_experiment_id
    found = experiment_id(name)
    mlflow.set_experiment(experiment_id=found)
    try:
        yield found
    finally:
        fluent._active_experiment_id = active
        if exported is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = exported


def version_by_alias(name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
