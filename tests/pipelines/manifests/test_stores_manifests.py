"""The MLflow Deployment and the store settings in every overlay: a stateless MLflow on
PostgreSQL + S3 with several replicas, credentials only from a Secret."""

from __future__ import annotations

import pytest
import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_mlflow_runs_replicas_on_postgres_and_s3_with_secret_credentials(kustomize: str, env: str) -> None:
    bundle = build(MANIFESTS / "overlays" / env, kustomize)
    deployment = next(r for r in bundle if r["kind"] == "Deployment" and r["metadata"]["name"] == "mlflow")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    assert not [v for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]  # stateless
    assert not [r for r in bundle if r["kind"] == "PersistentVolumeClaim" and "mlflow" in r["metadata"]["name"]]
    server, migrate = pod["containers"][0], pod["initContainers"][0]
    assert "--serve-artifacts" in server["args"] and "db upgrade" in " ".join(migrate["command"])
    for c in (server, migrate):
        assert {"secretRef": {"name": "mlflow-stores"}} in c["envFrom"]
        inline = {e["name"]: e.get("value") for e in c.get("env", []) if "value" in e}
        assert not {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(inline)
    text = yaml.safe_dump_all(bundle)
    assert "sqlite" not in text and "postgresql://" not in text  # no database URI (or password) in manifests
    settings = next(r for r in bundle if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "platform-settings")
    data = settings["data"]
    for key in ("CONSTRUCTOS_LANDING_URI", "CONSTRUCTOS_ARTIFACTS_URI", "MLFLOW_ARTIFACTS_DESTINATION"):
        assert data[key].startswith("s3://"), key
    destination = {e["name"]: e for e in server["env"]}["MLFLOW_ARTIFACTS_DESTINATION"]
    assert destination["valueFrom"]["configMapKeyRef"]["name"] == "platform-settings"


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_trigger_lands_into_s3_with_the_bucket_credentials_only(kustomize: str, env: str) -> None:
    bundle = build(MANIFESTS / "overlays" / env, kustomize)
    deployment = next(r for r in bundle if r["kind"] == "Deployment" and r["metadata"]["name"] == "trigger")
    (trigger,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": "platform-settings"}} in trigger["envFrom"]  # CONSTRUCTOS_LANDING_URI
    assert not [e for e in trigger["envFrom"] if e.get("secretRef", {}).get("name") == "mlflow-stores"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in trigger["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        k: {"name": "mlflow-stores", "key": k, "optional": True} for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
