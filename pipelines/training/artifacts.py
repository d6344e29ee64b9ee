"""Pipeline artifacts in the artifact store (``settings.artifacts_uri``: a folder or ``s3://``).

Besides the step outputs kfp keeps for itself, the steps publish what people browse later:

- ``snapshots/<model>/<data_hash>.parquet``: the training data, content-addressed (written once:
  the same rows are never stored twice), recorded on the MLflow run as a dataset input;
- ``data-docs/<model>/<data_hash>/``: the great-expectations Data Docs site of its validation;
- ``plots/<model>/<mlflow_run_id>/``: the evaluation plots (also logged to the MLflow run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipelines.settings import get_settings
from pipelines.storage import Store

log = logging.getLogger(__name__)


def store() -> Store:
    return get_settings().artifacts_store


def snapshot_key(model: str, data_hash: str) -> str:
    return f"snapshots/{model}/{data_hash}.parquet"


def publish_snapshot(model: str, path: Path, data_hash: str) -> str:
    """Copy the snapshot file to the store (once per content hash); returns its URI."""
    target = store()
    key = snapshot_key(model, data_hash)
    created = target.put_if_absent(key, Path(path).read_bytes())
    log.info("snapshot %s %s", "published to" if created else "already in", target.url(key))
    return target.url(key)


def publish_dir(kind: str, model: str, name: str, folder: Path) -> str:
    """Copy ``folder`` (Data Docs, plots) to ``<kind>/<model>/<name>/``; returns its URI."""
    target = store()
    prefix = f"{kind}/{model}/{name}"
    keys = target.upload_dir(folder, prefix)
    log.info("%s: %s files in %s", kind, len(keys), target.url(prefix))
    return target.url(prefix)


def record_snapshot(mlflow_run_id: str, model: str, frame: pd.DataFrame, data_hash: str, *, target: str = "") -> None:
    """Log the snapshot as the run's training dataset (``mlflow.log_input``): its URI in the
    artifact store, the content hash as digest and tag, so the lineage shows in the MLflow UI."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from pipelines.training import mlflow_store

    mlflow_store.configure()
    dataset = from_pandas(
        frame,
        source=store().url(snapshot_key(model, data_hash)),
        targets=target or None,
        name=f"{model}-snapshot",
        digest=data_hash[:36],  # MLflow keeps at most 36 characters; the whole hash is a tag
    )
    with mlflow.start_run(run_id=mlflow_run_id):
        mlflow.log_input(dataset, context="training", tags={"data_hash": data_hash})
        mlflow.set_tag("snapshot_uri", dataset.source.to_dict()["uri"])
