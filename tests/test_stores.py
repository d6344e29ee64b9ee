"""The platform on the production-like stores of ``make stores-up``: landing on S3, the pipeline
end to end with MLflow on PostgreSQL + S3, lineage from the MLflow run to the snapshot."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.demo import land_synthetic
from pipelines.settings import get_settings
from pipelines.storage import Store
from pipelines.streaming.landing import parts as landing_parts
from pipelines.training.steps.extract import extract
from tests.stores import Stores

pytestmark = [pytest.mark.integration, pytest.mark.stores]
MODEL = "credit_risk"


DAYS = {"a": "2026-01-01", "b": "2026-01-02", "c": "2026-02-01"}


def rows(ids: list[str]) -> pd.DataFrame:
    """Events as landed: an event id always comes with the same content."""
    return pd.DataFrame({"event_id": ids, "occurred_at": [f"{DAYS[i]}T12:00:00+00:00" for i in ids], "x": 1})


def test_landing_on_s3_commits_parts_once_and_reads_each_event_once(stores: Stores, tmp_path: Path) -> None:
    store = Store(stores.prefix_uri("landing"), endpoint_url=stores.endpoint)
    assert landing_parts.write_part(store, MODEL, rows(["a", "b"]), name="p0-0-1") is not None
    # the same offsets landed again (a retry, another replica): stored once
    assert landing_parts.write_part(store, MODEL, rows(["a", "b"]), name="p0-0-1") is None
    # an overlapping batch under another name: readers keep the first copy of each event
    landing_parts.write_part(store, MODEL, rows(["b", "c"]))
    assert len(landing_parts.part_keys(store, MODEL)) == 2
    frame = landing_parts.read_landed(store, MODEL)
    assert sorted(frame["event_id"]) == ["a", "b", "c"]
    assert list(landing_parts.read_landed(store, MODEL, since="2026-01-15")["event_id"]) == ["c"]
    snapshot = extract(store, MODEL, tmp_path / "snapshot.parquet", until="2026-01-15")
    assert snapshot.rows == 2 and len(snapshot.data_hash) == 64
    with pytest.raises(ValueError, match=r"no landed rows for 'stock_demand' in s3://"):
        extract(store, "stock_demand", tmp_path / "none.parquet")


@pytest.fixture
def on_stores(stores: Stores, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Settings of a world on the stores: landing and artifacts under fresh S3 prefixes, MLflow
    the stores' tracking server; local files (kfp outputs) in a temporary folder."""
    landing_uri, artifacts_uri = stores.prefix_uri("landing"), stores.prefix_uri("artifacts")
    with stores.applied(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path))
        mp.setenv("CONSTRUCTOS_LANDING_URI", landing_uri)
        mp.setenv("CONSTRUCTOS_ARTIFACTS_URI", artifacts_uri)
        get_settings.cache_clear()
        yield get_settings().landing_store, get_settings().artifacts_store
    get_settings.cache_clear()


def test_pipeline_end_to_end_on_postgres_and_s3(stores: Stores, on_stores: tuple[Store, Store]) -> None:
    import mlflow
    from mlflow import MlflowClient

    from pipelines.training import mlflow_store
    from pipelines.training.run import run_local

    landing, artifacts = on_stores
    land_synthetic(MODEL, 4000, seed=11)
    assert landing.list_keys(MODEL), "synthetic rows land in the S3 landing store"

    summary = run_local(MODEL, hyperparameters={"max_iter": 5})
    assert set(summary.metrics) >= {"roc_auc", "brier"}  # evaluate ran (the gate may compare with a champion)

    mlflow_store.configure()
    run = MlflowClient().get_run(summary.mlflow_run_id)
    data_hash = run.data.tags["data_hash"]
    # lineage: the run's training dataset is the snapshot in the artifact store, with its hash
    (dataset_input,) = run.inputs.dataset_inputs
    source = dataset_input.dataset.source
    snapshot_key = f"snapshots/{MODEL}/{data_hash}.parquet"
    assert artifacts.url(snapshot_key) in source
    assert {t.key: t.value for t in dataset_input.tags}["data_hash"] == data_hash
    assert dataset_input.dataset.digest == data_hash[:36]
    snapshot = pd.read_parquet(io.BytesIO(artifacts.read_bytes(snapshot_key)))
    assert len(snapshot) == 4000
    # Data Docs of the validation and the plots are in the object store
    assert artifacts.exists(f"data-docs/{MODEL}/{data_hash}/index.html")
    assert f"plots/{MODEL}/{summary.mlflow_run_id}/roc.png" in artifacts.list_keys("plots")
    # the model's files went through the tracking server (proxied) into S3
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    model_id = run.outputs.model_outputs[0].model_id
    in_s3 = Store(f"s3://{stores.bucket}/mlflow", endpoint_url=stores.endpoint).list_keys()
    assert any(f"/models/{model_id}/artifacts/MLmodel" in key for key in in_s3)
    assert hasattr(mlflow.sklearn.load_model(f"models:/{model_id}"), "predict_proba")
