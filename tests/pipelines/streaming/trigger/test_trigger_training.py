"""End to end, nothing injected: events on Kafka -> the trigger process lands them -> enough new rows
-> the real launcher runs the training pipeline (kfp.local) on the landed Parquet -> a model version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.publish import publish_events
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import MODEL_EVENTS, ensure_topics, named
from tests.kafka_broker import ROOT

pytestmark = pytest.mark.integration
MODEL = "credit_risk"


@pytest.mark.timeout(1500)  # the trigger exits once the whole training run it launched has ended
def test_enough_new_rows_train_and_register_a_model(kafka_settings: Settings) -> None:
    spec = load_spec(MODEL)
    ensure_topics(kafka_settings, [MODEL])
    publish_events(MODEL, to_events(generate(MODEL, spec.retrain.min_new_rows, seed=4), seed=4), kafka_settings)

    env = {k: v for k, v in os.environ.items() if "MLFLOW" not in k} | {
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "CONSTRUCTOS_DATA_DIR": str(kafka_settings.data_dir),
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": kafka_settings.kafka_topic_prefix,
        "CONSTRUCTOS_TRIGGER_GROUP": kafka_settings.trigger_group,
        "CONSTRUCTOS_PIPELINE_RUNNER": "local",
    }
    command = [sys.executable, "-m", "pipelines.streaming.trigger", "--models", MODEL, "--exit-when-idle", "2"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    entry = RetrainState(kafka_settings.ledger_store).get(f"{MODEL}-rows-0")
    assert entry is not None and entry["status"] == "launched", entry
    assert entry["run_id"].startswith("training-") and entry["landed_rows"] == spec.retrain.min_new_rows

    from mlflow import MlflowClient

    store = f"sqlite:///{(Path(kafka_settings.data_dir) / 'mlflow' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)  # not a registry another test left set
    (version,) = client.search_model_versions(f"name='{MODEL}'")
    assert version.tags["pipeline_run_id"] == entry["run_id"]  # trained on what the trigger landed

    consumer = KafkaConsumer(
        named(MODEL_EVENTS, kafka_settings),
        **kafka_settings.kafka_options(),
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    events = [json.loads(r.value) for r in consumer]
    consumer.close()
    assert [(e["type"], e["key"]) for e in events if e["model"] == MODEL][:2] == [
        ("retrain.triggered", f"{MODEL}-rows-0"),
        ("training.launched", f"{MODEL}-rows-0"),
    ]
