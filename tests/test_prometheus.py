"""A real Prometheus (Debian's package) scraping the real services, configured from the manifests.

``python -m predictors`` (a champion and a worse shadow challenger, inference log on),
``python -m pipelines.monitoring`` and ``python -m pipelines.streaming.trigger`` run on free ports;
``scripts/prometheus.sh`` starts Prometheus with the scrape configuration that
:mod:`pipelines.manifests.scrape` derives from the overlay's ServiceMonitors/PodMonitors. Traffic,
drift and outcomes flow through the real broker. Then every Grafana panel's query returns data,
and ``python -m pipelines.rollout analyze --prometheus`` decides from Prometheus alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from feature_specs import Validator, load_spec
from feature_specs.reference import build_reference, write_reference
from feature_specs.synthetic import generate, to_events
from feature_specs.transform import SKOPS_TRUSTED_TYPES, build_model
from pipelines.manifests.check import MANIFESTS
from pipelines.manifests.scrape import prometheus_config
from pipelines.monitoring.live_accuracy import outcome_event
from pipelines.monitoring.outcomes import publish_outcomes
from pipelines.rollout.evidence import prometheus
from pipelines.settings import Settings
from pipelines.streaming.publish import publish_events
from pipelines.training.steps.train import scores
from tests.kafka_broker import ROOT, free_port
from tests.pipelines.monitoring.test_drift import shifted
from tests.pipelines.monitoring.test_monitoring import RESPONSE_TYPE, V2_RESPONSE, headers
from tests.test_closed_loop import environment, process, score, serve, wait_for, world  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus (apt-get install prometheus)"),
]
MODEL, REGRESSION = "credit_risk", "stock_demand"  # the dashboard has queries for either kind
SPEC = load_spec(MODEL)
DASHBOARD = MANIFESTS / "base" / "platform" / "grafana" / "constructos-ml.json"


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with ``$model`` as Grafana fills it in) of every dashboard query."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def v2_call(model: str, rows: int, seed: int) -> dict[str, Any]:
    spec, frame = load_spec(model), generate(model, rows, seed=seed).frame
    cast = {"bool": bool, "int": int, "float": float, "category": str}
    return {"inputs": [{"name": f.name, "shape": [rows], "datatype": f.v2_datatype,
                        "data": [None if pd.isna(v) else cast[f.dtype](v) for v in frame[f.name].tolist()]}
                       for f in spec.features]}  # fmt: skip


def register(name: str, *, shuffle_labels: bool, root: Path) -> str:
    """A trained version with its training reference (as the pipeline logs it), registered."""
    data = generate(MODEL, 4000, seed=7).frame
    x = Validator(SPEC, max_batch=len(data)).frame(data[SPEC.feature_names])
    y = data[SPEC.target.name].to_numpy()
    if shuffle_labels:
        y = np.random.default_rng(0).permutation(y)
    fitted = build_model(SPEC).fit(x, y)
    path = root / name
    mlflow.sklearn.save_model(fitted, str(path), skops_trusted_types=SKOPS_TRUSTED_TYPES)
    write_reference(build_reference(SPEC, x, scores(SPEC, fitted, x)), path)
    experiment = mlflow.create_experiment(f"prometheus-{name}", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_artifacts(str(path), "model")
        uri = mlflow.get_artifact_uri("model")
    return str(mlflow.register_model(uri, MODEL).version)


@pytest.fixture
def prometheus_home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "prometheus"
    env = os.environ | {"PROMETHEUS_HOME_DIR": str(home), "PROMETHEUS_PORT": str(free_port())}
    yield home, env
    subprocess.run(["bash", "scripts/prometheus.sh", "down"], cwd=ROOT, env=env, check=False, capture_output=True)


def test_prometheus_scrapes_the_services_as_the_monitors_say(
    world: Settings,  # noqa: F811
    tmp_path: Path,
    kustomize: str,
    model_dirs: dict[str, Path],
    prometheus_home: tuple[Path, dict[str, str]],
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(world.tracking_uri, registry_uri=world.tracking_uri)
    client.set_registered_model_alias(MODEL, "champion", register("good", shuffle_labels=False, root=tmp_path))
    client.set_registered_model_alias(MODEL, "challenger", register("bad", shuffle_labels=True, root=tmp_path))

    ports = {name: free_port() for name in ("predictor", "regression", "monitoring", "trigger")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = environment(world) | {
        "CONSTRUCTOS_MONITORING_WINDOW": "200",
        "CONSTRUCTOS_MONITORING_MODELS": f'["{MODEL}"]',
        "CONSTRUCTOS_MONITORING_GROUP": f"monitoring-{uuid.uuid4().hex[:8]}",
        "CONSTRUCTOS_TRIGGER_METRICS_PORT": str(ports["trigger"]),
    }
    logs = {name: tmp_path / f"{name}.log" for name in ports}
    shadow = f"--shadow_uri=models:/{MODEL}@challenger"
    home, prom_env = prometheus_home
    config = prometheus_config(
        MANIFESTS / "overlays" / "dev",
        {
            "credit-risk": f"127.0.0.1:{ports['predictor']}",
            "stock-demand": f"127.0.0.1:{ports['regression']}",
            "monitoring": f"127.0.0.1:{ports['monitoring']}",
            "trigger": f"127.0.0.1:{ports['trigger']}",
        },
        interval="1s",
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = f"http://127.0.0.1:{prom_env['PROMETHEUS_PORT']}"
    with (
        process(serve(world, ports["predictor"], shadow), env, logs["predictor"]),
        process(
            [
                "predictors",
                f"--model_name={REGRESSION}",
                f"--model_uri={model_dirs[REGRESSION]}",
                f"--http_port={ports['regression']}",
                "--enable_grpc=false",
            ],
            env,
            logs["regression"],
        ),  # fmt: skip
        process(["pipelines.monitoring", "--port", str(ports["monitoring"])], env, logs["monitoring"]),
        process(["pipelines.streaming.trigger", "--models", MODEL, "--no-retrain"], env, logs["trigger"]),
    ):
        up = subprocess.run(["bash", "scripts/prometheus.sh", "up", str(tmp_path / "prometheus.yml")],
                            cwd=ROOT, env=prom_env, capture_output=True, text=True, check=False)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        for name, model in (("predictor", MODEL), ("regression", REGRESSION)):
            ready = f"{url[name]}/v2/models/{model}/ready"
            wait_for(f"{model} ready", lambda r=ready: httpx.get(r).status_code == 200, logs[name], timeout_s=300)
        wait_for("monitoring consuming", lambda: httpx.get(f"{url['monitoring']}/healthz").json()["consuming"],
                 logs["monitoring"], timeout_s=300)  # fmt: skip
        query = prometheus(prom)

        # Every job of the monitors is scraped, with the labels the operator would set.
        targets = wait_for("all targets up", lambda: _all_up(query), home / "prometheus.log", timeout_s=120)
        assert targets == {
            ("constructos-ml/predictors", "credit-risk-local"),
            ("constructos-ml/predictors", "stock-demand-local"),
            ("constructos-ml/trigger", "trigger-local"),
            ("monitoring", "monitoring-local"),
        }
        # the PodMonitor's own relabelings ran on the pod labels the manifests give the predictors
        relabelled = {labels.get("inferenceservice") for labels, _ in query('up{job="constructos-ml/predictors"}')}
        assert relabelled == {"credit-risk", "stock-demand"}

        data = generate(MODEL, 1000, seed=31).frame  # ~60 defaults: enough to rank two models
        ids = score(url["predictor"], data)
        for seed in range(3):
            answer = httpx.post(f"{url['regression']}/v2/models/{REGRESSION}/infer", json=v2_call(REGRESSION, 20, seed))
            assert answer.status_code == 200, answer.text
        score(url["predictor"], shifted(seed=22, rows=250))  # a drifted window -> a retrain request
        bad = httpx.post(f"{url['predictor']}/v2/models/{MODEL}/infer", json={"inputs": []}, timeout=30)
        assert bad.status_code == 400, bad.text
        labels = data[SPEC.target.name].to_numpy()
        outcomes = [outcome_event(MODEL, rid, bool(labels[i * 50 + row]), row=row)
                    for i, rid in enumerate(ids) for row in range(50)]  # fmt: skip
        publish_outcomes(MODEL, outcomes, world)
        # One payload-logger CloudEvent (a response half: the monitor waits for its request half).
        event = httpx.post(f"{url['monitoring']}/events", headers=headers(RESPONSE_TYPE, "solo"), json=V2_RESPONSE)
        assert event.json()["result"] == "pending"
        httpx.post(f"{url['monitoring']}/events", headers=headers("org.example.unknown", "x"), content=b"{}")

        empty: list[str] = []

        def every_panel_has_data() -> bool:
            empty[:] = [
                f"{title}: {q}"
                for title, q in panel_queries()
                if not any(query(q.replace("$model", m)) for m in (MODEL, REGRESSION))
            ]
            return not empty

        try:
            wait_for("every dashboard panel has data", every_panel_has_data, timeout_s=180)
        except TimeoutError:
            pytest.fail("panels without data:\n" + "\n".join(empty))
        # The trigger's own counters, as scraped: 30 events published, 3 of them malformed.
        events = to_events(generate(MODEL, 30, seed=4), seed=4)
        for e in events[::10]:
            e["company_age_years"] = "unknown"
        publish_events(MODEL, events, world)
        counted = 'constructos_trigger_events_total{outcome="%s"}'
        counts = lambda: [sum(v for _, v in query(counted % r)) for r in ("landed", "rejected")]  # noqa: E731
        wait_for("the trigger's counts in Prometheus", lambda: counts() == [27, 3], logs["trigger"])
        assert query(counted % "landed")[0][0]["pod"] == "trigger-local"

        analyze = [sys.executable, "-m", "pipelines.rollout", "analyze", MODEL, "--prometheus", prom,
                   "--min-rows", "200", "--min-labels", "200"]  # fmt: skip
        done = subprocess.run(analyze, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    print(done.stdout, done.stderr)
    assert done.returncode == 1, done.stdout + done.stderr  # rollback
    assert "decision: rollback" in done.stdout
    assert "live roc_auc" in done.stdout and "p99" in done.stdout, done.stdout


def _all_up(query: Any) -> set[tuple[str, str]] | None:
    found = {(labels["job"], labels["pod"]) for labels, value in query("up") if value == 1}
    return found if len(found) == 4 else None
