"""SIGTERM while a real training run (kfp.local) runs: the trigger process stops within its grace
period, hands the launch back, and the next trigger launches that key once."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from feature_specs import load_spec
from feature_specs.synthetic import generate, to_events
from pipelines.settings import Settings
from pipelines.streaming.publish import publish_events
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.launch import ledger_key
from pipelines.streaming.retraining.state import RetrainState
from pipelines.streaming.topics import MODEL_EVENTS, ensure_topics
from pipelines.streaming.trigger.loop import STOP_WITHIN_S
from pipelines.streaming.trigger.processes import _alive, descendants
from tests.kafka_broker import ROOT, TriggerProcess
from tests.pipelines.streaming.trigger.test_kafka_trigger import read_topic

pytestmark = pytest.mark.integration
MODEL = "credit_risk"
KEY = f"{MODEL}-rows-0"


def test_sigterm_during_a_training_run_stops_in_time_and_the_launch_is_resumed_once(
    kafka_settings: Settings,
) -> None:
    spec = load_spec(MODEL)
    ensure_topics(kafka_settings, [MODEL])
    publish_events(MODEL, to_events(generate(MODEL, spec.retrain.min_new_rows, seed=41), seed=41), kafka_settings)
    training = kafka_settings.model_copy(update={"pipeline_runner": "local"})
    trigger = TriggerProcess(training, MODEL, retrain=True)
    store = kafka_settings.ledger_store
    deadline = time.monotonic() + 120
    while (doc := ledger.read_doc(store, ledger_key(KEY))[0]) is None or doc.get("status") != "running":
        assert time.monotonic() < deadline and trigger.proc.poll() is None, trigger.log()
        time.sleep(0.2)
    while not (tasks := [pid for pid in descendants(trigger.proc.pid) if b"kfp" in _cmdline(pid)]):
        assert time.monotonic() < deadline and trigger.proc.poll() is None, trigger.log()
        time.sleep(0.2)  # until kfp.local runs one of the pipeline's tasks (a process of its own)
    below = descendants(trigger.proc.pid)
    assert tasks
    started = time.monotonic()
    trigger.proc.send_signal(signal.SIGTERM)
    trigger.proc.wait(60)
    took = time.monotonic() - started
    trigger._reader.join(5)
    assert took <= STOP_WITHIN_S, f"the trigger took {took:.0f}s to stop:\n{trigger.log()}"
    assert trigger.proc.returncode == 0, trigger.log()
    assert not [pid for pid in below if _alive(pid)]  # the abandoned run's processes ended too
    doc = ledger.read_doc(store, ledger_key(KEY))[0]
    assert doc is not None and doc["lease_until"] == 0.0 and doc["run_id"] == ""  # handed back, not finished
    assert RetrainState(store).get(KEY)["status"] == "pending"  # type: ignore[index]

    again = TriggerProcess(kafka_settings.model_copy(update={"pipeline_runner": "dry-run"}), MODEL, retrain=True)
    try:
        again.wait_for("training launched for " + KEY, timeout=60)  # at once: no lease to wait out
    finally:
        again.proc.send_signal(signal.SIGTERM)
        again.proc.wait(30)
    entry = RetrainState(store).get(KEY)
    assert entry is not None and entry["status"] == "launched" and entry["run_id"] == f"dry-run-{KEY}"
    assert ledger.read_doc(store, ledger_key(KEY))[0]["attempt"] == 2  # type: ignore[index]
    launched = [json.loads(r.value) for r in read_topic(kafka_settings, MODEL_EVENTS)]
    assert [e["key"] for e in launched if e["type"] == "training.launched"] == [KEY]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_the_grace_period_leaves_room_for_the_stop() -> None:
    documents = yaml.safe_load_all((ROOT / "manifests/base/platform/trigger.yaml").read_text())
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= STOP_WITHIN_S + 10
