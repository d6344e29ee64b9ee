"""The closed loop end to end, nothing mocked but the cluster: real processes on a real broker.

1. Drift: the champion (trained by the real pipeline) is served by ``python -m predictors
   --inference_log``; ``python -m pipelines.monitoring`` reads the log; traffic whose distribution
   shifts drifts a window -> a retrain request -> ``python -m pipelines.streaming.trigger`` launches the
   real training pipeline (kfp.local) -> a new version is registered as ``@challenger``.
2. Shadow: a worse challenger shadows the champion; outcomes arrive for the requests;
   ``python -m pipelines.rollout auto`` (GitOps overlay on a copy of the manifests, MLflow
   aliases in a real sqlite store) analyses the inference log and rolls the challenger back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest

from feature_specs import Validator, load_spec
from feature_specs.synthetic import generate
from feature_specs.transform import SKOPS_TRUSTED_TYPES, build_model
from pipelines.demo import land_synthetic
from pipelines.monitoring.live_accuracy import outcome_event
from pipelines.monitoring.outcomes import publish_outcomes
from pipelines.rollout.evidence import read_topic
from pipelines.settings import Settings, get_settings
from pipelines.streaming.topics import INFERENCE_LOG, MODEL_EVENTS, ensure_topics, named
from tests.kafka_broker import ROOT, free_port
from tests.pipelines.monitoring.test_drift import shifted
from tests.pipelines.monitoring.test_monitoring_kafka import raw_columns, v2_request

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
SPEC = load_spec(MODEL)


def environment(settings: Settings) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "MLFLOW" not in k and not k.startswith("CONSTRUCTOS_")} | {
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CONSTRUCTOS_DATA_DIR": str(settings.data_dir),
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CONSTRUCTOS_TRIGGER_GROUP": settings.trigger_group,
        "CONSTRUCTOS_PIPELINE_RUNNER": "local",
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(what: str, condition: Callable[[], Any], log: Path | None = None, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := condition():
                return found
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what}\n{tail}")


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def score(url: str, frame: Any, batch: int = 50) -> list[str]:
    """V2 calls of ``batch`` rows each; returns the request ids."""
    ids = []
    for start in range(0, len(frame) - batch + 1, batch):
        request_id = uuid.uuid4().hex
        body = v2_request(request_id, raw_columns(frame.iloc[start : start + batch]))
        answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(request_id)
    return ids


@pytest.fixture
def world(kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This process and its children share one data dir, topic prefix and MLflow store."""
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI: never inherit another test's store
    kafka_settings = kafka_settings.model_copy(update={"mlflow_tracking_uri": None})
    for name, value in environment(kafka_settings).items():
        if name.startswith(("CONSTRUCTOS_", "KAFKA_", "MLFLOW_")):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    ensure_topics(kafka_settings, [MODEL])
    mlflow.set_tracking_uri(kafka_settings.tracking_uri)
    mlflow.set_registry_uri(kafka_settings.tracking_uri)
    yield kafka_settings
    get_settings.cache_clear()


def serve(settings: Settings, port: int, *extra: str) -> list[str]:
    return ["predictors", f"--model_name={MODEL}", f"--model_uri=models:/{MODEL}@champion", "--inference_log",
            f"--http_port={port}", "--enable_grpc=false", *extra]  # fmt: skip


def test_drift_requests_a_retrain_that_registers_a_new_challenger(world: Settings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from pipelines.training.run import run_local

    land_synthetic(MODEL, 4000, seed=7)
    champion = run_local(MODEL)
    assert (champion.version, champion.alias) == ("1", "champion"), champion.gate_reasons

    env = environment(world) | {
        "CONSTRUCTOS_MONITORING_WINDOW": "200",
        "CONSTRUCTOS_MONITORING_MODELS": f'["{MODEL}"]',
        "CONSTRUCTOS_MONITORING_GROUP": f"monitoring-{uuid.uuid4().hex[:8]}",
    }
    predictor, monitoring = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    logs = {name: tmp_path / f"{name}.log" for name in ("predictor", "monitoring", "trigger")}
    with (
        process(serve(world, int(predictor.rsplit(":", 1)[1])), env, logs["predictor"]),
        process(["pipelines.monitoring", "--port", monitoring.rsplit(":", 1)[1]], env, logs["monitoring"]),
        process(["pipelines.streaming.trigger", "--models", MODEL], env, logs["trigger"]),
    ):
        wait_for("predictor ready", lambda: httpx.get(f"{predictor}/v2/models/{MODEL}/ready").status_code == 200,
                 logs["predictor"])  # fmt: skip
        wait_for("monitoring consuming", lambda: httpx.get(f"{monitoring}/healthz").json()["consuming"],
                 logs["monitoring"])  # fmt: skip

        score(predictor, generate(MODEL, 260, seed=21).frame)  # like the training data: one calm window
        windows = "constructos_drift_windows_total"
        wait_for("a calm window", lambda: metric(monitoring, windows, version="1", drifted="false") == 1,
                 logs["monitoring"])  # fmt: skip
        assert metric(monitoring, "constructos_retrain_requests_total") == 0

        score(predictor, shifted(seed=22, rows=260))  # customers pay much later: a drifted window
        wait_for("a drifted window", lambda: metric(monitoring, windows, version="1", drifted="true") == 1,
                 logs["monitoring"])  # fmt: skip
        psi = metric(monitoring, "constructos_feature_drift", version="1", feature="avg_days_to_pay")
        assert psi > SPEC.drift.psi_threshold
        assert metric(monitoring, "constructos_feature_drift", version="1", feature="company_age_years") < 0.2
        retrains = "constructos_retrain_requests_total"
        wait_for("a retrain request", lambda: metric(monitoring, retrains, model=MODEL, kind="drift") == 1,
                 logs["monitoring"])  # fmt: skip

        client = MlflowClient(world.tracking_uri, registry_uri=world.tracking_uri)

        def challenger() -> Any:
            try:
                return client.get_model_version_by_alias(MODEL, "challenger")
            except mlflow.exceptions.MlflowException:
                return None

        version = wait_for("the retrained challenger", challenger, logs["trigger"], timeout_s=400)

        def recorded() -> list[dict[str, Any]]:
            return [e for e in map(_json, read_topic(world, named(MODEL_EVENTS, world), 3600)) if e]

        # the trigger records the launch once the run it started has returned: shortly after the
        # registration, so the trigger keeps running until then
        wanted = {"drift.detected", "retrain.triggered", "training.launched"}
        wait_for("the launch recorded", lambda: wanted <= {e["type"] for e in recorded()}, logs["trigger"])
    assert str(version.version) == "2"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    events = [e for e in map(_json, read_topic(world, named(MODEL_EVENTS, world), 3600)) if e]
    drift = next(e for e in events if e["type"] == "drift.detected")
    launched = next(e for e in events if e["type"] == "training.launched")
    assert launched["key"] == f"{MODEL}-request-{drift['request_id']}"
    assert version.tags["pipeline_run_id"] == launched["run_id"]


def _json(raw: bytes) -> dict[str, Any] | None:
    import json

    try:
        return dict(json.loads(raw))
    except ValueError:
        return None


def register(name: str, *, shuffle_labels: bool, root: Path) -> str:
    """Train on synthetic rows (optionally with shuffled labels), log and register a version."""
    data = generate(MODEL, 4000, seed=7).frame
    x = Validator(SPEC, max_batch=len(data)).frame(data[SPEC.feature_names])
    y = data[SPEC.target.name].to_numpy()
    if shuffle_labels:
        y = np.random.default_rng(0).permutation(y)
    path = root / name
    mlflow.sklearn.save_model(build_model(SPEC).fit(x, y), str(path), skops_trusted_types=SKOPS_TRUSTED_TYPES)
    experiment = mlflow.create_experiment(f"closed-loop-{name}", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):  # artifacts in the test's folder, not the checkout
        mlflow.log_artifacts(str(path), "model")
        uri = mlflow.get_artifact_uri("model")
    return str(mlflow.register_model(uri, MODEL).version)


def test_a_worse_shadow_challenger_is_rolled_back_by_rollout_auto(
    world: Settings, tmp_path: Path, kustomize: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(world.tracking_uri, registry_uri=world.tracking_uri)
    client.set_registered_model_alias(MODEL, "champion", register("good", shuffle_labels=False, root=tmp_path))
    client.set_registered_model_alias(MODEL, "challenger", register("bad", shuffle_labels=True, root=tmp_path))

    env = environment(world)
    url, log = f"http://127.0.0.1:{free_port()}", tmp_path / "predictor.log"
    data = generate(MODEL, 1000, seed=31).frame  # ~60 defaults among them: enough to rank two models
    shadow = f"--shadow_uri=models:/{MODEL}@challenger"
    with process(serve(world, int(url.rsplit(":", 1)[1]), shadow), env, log):
        wait_for("predictor ready", lambda: httpx.get(f"{url}/v2/models/{MODEL}/ready").status_code == 200, log)
        ids = score(url, data)
        topic = named(INFERENCE_LOG, world)
        wait_for("champion and shadow records", lambda: len(read_topic(world, topic, 600)) == 2 * len(ids), log)
    labels = data[SPEC.target.name].to_numpy()
    outcomes = [
        outcome_event(MODEL, request_id, bool(labels[i * 50 + row]), row=row)
        for i, request_id in enumerate(ids)
        for row in range(50)
    ]
    publish_outcomes(MODEL, outcomes, world)

    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    overlay = manifests / "overlays" / "dev"
    command = [sys.executable, "-m", "pipelines.rollout", "auto", MODEL, "--overlay", str(overlay), "--interval", "0",
               "--failure-limit", "1", "--min-rows", "200", "--min-labels", "200"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "outcome: rollback" in done.stdout
    live = re.search(r"FAIL live roc_auc (0\.\d+) vs champion (0\.\d+) \(1000 labels", done.stdout)
    assert live is not None, done.stdout
    assert float(live[1]) < 0.65 < 0.75 < float(live[2])  # a coin against a model that ranks
    assert "alias challenger -> 2" in done.stdout  # the canary was started from the alias first
    rollout_file = (overlay / "rollout" / f"{MODEL}.yaml").read_text()
    assert f"models:/{MODEL}/1" in rollout_file and "canaryTrafficPercent" not in rollout_file  # the pinned champion
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(MODEL, "challenger")
