"""The scrape configuration derived from the manifests' ServiceMonitors/PodMonitors (no Prometheus needed)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS
from pipelines.manifests.scrape import main, matches, prometheus_config, scrape_configs

DEV = MANIFESTS / "overlays" / "dev"


@pytest.fixture(scope="module")
def resources(kustomize: str) -> list[dict[str, Any]]:
    return build(DEV, kustomize)


def jobs_by_name(config: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config}


def test_each_monitor_selects_its_workloads_with_the_operators_labels(resources: list[dict[str, Any]]) -> None:
    targets = {"credit-risk": "127.0.0.1:1001", "lead-score": "127.0.0.1:1002", "monitoring": "127.0.0.1:1003",
               "trigger": "127.0.0.1:1004", "mlflow": "127.0.0.1:1005"}  # fmt: skip
    jobs = jobs_by_name(scrape_configs(resources, targets))
    assert set(jobs) == {
        "podMonitor/constructos-ml/predictors/0",
        "podMonitor/constructos-ml/trigger/0",
        "serviceMonitor/constructos-ml/monitoring/0",
    }  # MLflow is given an address but no monitor selects it
    predictors = jobs["podMonitor/constructos-ml/predictors/0"]
    assert [g["targets"] for g in predictors["static_configs"]] == [["127.0.0.1:1001"], ["127.0.0.1:1002"]]
    labels = predictors["static_configs"][0]["labels"]
    assert {k: v for k, v in labels.items() if not k.startswith("__")} == {
        "namespace": "constructos-ml",
        "pod": "credit-risk-local",
        "container": "kserve-container",
        "endpoint": "http1",
        "job": "constructos-ml/predictors",
    }
    # the monitor's relabelings read the pod's labels as Kubernetes discovery presents them
    assert labels["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"] == "credit-risk"
    assert {"source_labels": ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"],
            "target_label": "inferenceservice"} in predictors["relabel_configs"]  # fmt: skip
    assert jobs["podMonitor/constructos-ml/trigger/0"]["static_configs"][0]["labels"]["endpoint"] == "metrics"
    monitoring = jobs["serviceMonitor/constructos-ml/monitoring/0"]
    assert monitoring["static_configs"][0]["labels"]["service"] == "monitoring"
    assert (monitoring["metrics_path"], monitoring["scrape_interval"]) == ("/metrics", "30s")


def test_one_local_server_for_several_predictors_is_one_target(resources: list[dict[str, Any]]) -> None:
    same = {name: "127.0.0.1:8080" for name in ("credit-risk", "stock-demand", "lead-score")}
    (job,) = scrape_configs(resources, same, interval="5s")
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"], "labels": job["static_configs"][0]["labels"]}]
    assert job["scrape_interval"] == "5s"


def test_a_monitor_that_selects_nothing_is_an_error(resources: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(resources)
    trigger = next(r for r in broken if r["kind"] == "PodMonitor" and r["metadata"]["name"] == "trigger")
    trigger["spec"]["podMetricsEndpoints"][0]["port"] = "http"  # the trigger's pod has no such port
    with pytest.raises(ValueError, match="PodMonitor/trigger endpoint 0 selects no pod"):
        scrape_configs(broken, {"trigger": "127.0.0.1:1"})


def test_label_selectors() -> None:
    labels = {"app": "x", "tier": "web"}
    assert matches({"matchLabels": {"app": "x"}}, labels)
    assert not matches({"matchLabels": {"app": "y"}}, labels)
    assert matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]}, labels)
    assert not matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)


def test_the_command_writes_a_configuration_promtool_accepts(kustomize: str, tmp_path: Any, capsys: Any) -> None:
    assert main(["--target", "credit-risk=127.0.0.1:8080", "--target", "monitoring=127.0.0.1:8000"]) == 0
    config = capsys.readouterr().out
    assert {job["job_name"] for job in yaml.safe_load(config)["scrape_configs"]} == {
        "podMonitor/constructos-ml/predictors/0",
        "serviceMonitor/constructos-ml/monitoring/0",
    }
    with pytest.raises(ValueError, match="no workload called no-such-workload"):
        prometheus_config(DEV, {"no-such-workload": "127.0.0.1:1"})
    if shutil.which("promtool"):
        path = tmp_path / "prometheus.yml"
        path.write_text(config)
        checked = subprocess.run(
            ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
