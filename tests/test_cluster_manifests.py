"""The overlays against a real kube-apiserver with the KServe, Strimzi and Prometheus Operator CRDs:
server-side dry runs and real server-side applies (schemas, admission, RBAC objects as the API
server stores them), and RBAC decisions for the platform's ServiceAccounts."""

from __future__ import annotations

import pytest

from pipelines.manifests import check as mc
from tests.kube_cluster import Kube

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
OVERLAYS = ("dev", "staging", "prod")
GITOPS = "--field-manager=constructos-gitops"
NS = "constructos-ml"


@pytest.fixture(scope="module")
def namespaces(kube: Kube) -> None:
    """A server-side dry run cannot see a Namespace created in the same dry run: create them first
    (`kafka` belongs to the Strimzi installation, not to these manifests)."""
    kube.kubectl("apply", "--server-side", GITOPS, "-f", str(mc.MANIFESTS / "base" / "platform" / "namespace.yaml"))
    kube.kubectl("create", "namespace", "kafka", check=False)


def apply_k(kube: Kube, env: str, *extra: str) -> str:
    overlay = str(mc.MANIFESTS / "overlays" / env)
    return kube.kubectl("apply", "-k", overlay, "--server-side", GITOPS, *extra).stdout


@pytest.mark.parametrize("env", OVERLAYS)
def test_server_side_dry_run_of_every_overlay_is_clean(kube: Kube, namespaces: None, env: str) -> None:
    out = apply_k(kube, env, "--dry-run=server")
    lines = out.strip().splitlines()
    assert lines and all(line.endswith("serverside-applied (server dry run)") for line in lines), out
    for kind in ("inferenceservice.serving.kserve.io", "kafkatopic.kafka.strimzi.io", "podmonitor.monitoring"):
        assert any(line.startswith(kind) for line in lines), (kind, out)


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_overlay_applies_and_is_stored_as_rendered(kube: Kube, namespaces: None, env: str) -> None:
    apply_k(kube, env)
    rendered = {(r["kind"], r["metadata"]["name"]): r for r in mc.build(mc.MANIFESTS / "overlays" / env)}
    isvc = kube.get("inferenceservice", "credit-risk", "-n", NS)
    want = rendered["InferenceService", "credit-risk"]
    assert isvc["spec"]["predictor"]["minReplicas"] == want["spec"]["predictor"]["minReplicas"]
    assert isvc["spec"]["predictor"]["containers"] == want["spec"]["predictor"]["containers"]  # nothing pruned
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    topics = kube.get("kafkatopics.v1.kafka.strimzi.io", "-n", "kafka")["items"]
    assert len(topics) == sum(1 for kind, _ in rendered if kind == "KafkaTopic")
    monitors = kube.get("podmonitors,servicemonitors", "-n", NS)["items"]
    assert {m["metadata"]["name"] for m in monitors} == {"predictors", "trigger", "monitoring"}
    assert {p["metadata"]["name"] for p in kube.get("pdb", "-n", NS)["items"]} == {"predictors", "mlflow", "monitoring"}


def test_strimzi_1_refuses_the_old_kafka_topic_version(kube: Kube, namespaces: None) -> None:
    old = "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata: {name: old, namespace: kafka}\nspec: {}\n"
    done = kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=old, check=False)
    assert done.returncode != 0 and "v1beta2" in done.stderr


def test_a_misspelt_inference_service_field_is_refused_not_pruned(kube: Kube, namespaces: None) -> None:
    isvc = "\n".join(
        [
            "apiVersion: serving.kserve.io/v1beta1",
            "kind: InferenceService",
            f"metadata: {{name: typo, namespace: {NS}}}",
            "spec: {predictor: {canaryTrafficPercnt: 10, containers: [{name: c, image: i}]}}",
        ]
    )
    done = kube.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=isvc, check=False)
    assert done.returncode != 0 and "canaryTrafficPercnt" in done.stderr


def sa(name: str) -> str:
    return f"system:serviceaccount:{NS}:{name}"


def test_the_trigger_may_launch_kfp_runs_and_nothing_else(kube: Kube, namespaces: None) -> None:
    apply_k(kube, "staging")
    trigger = sa("trigger")
    for verb in ("create", "get", "list"):
        assert kube.can_i(verb, "runs.pipelines.kubeflow.org", NS, trigger)
        assert kube.can_i(verb, "experiments.pipelines.kubeflow.org", NS, trigger)
    refused = [
        ("delete", "runs.pipelines.kubeflow.org"),
        ("patch", "inferenceservices.serving.kserve.io"),
        ("get", "inferenceservices.serving.kserve.io"),
        ("get", "secrets"),
        ("list", "pods"),
        ("create", "pods"),
        ("patch", "deployments.apps"),
        ("create", "kafkatopics.kafka.strimzi.io"),
    ]
    assert [(verb, what) for verb, what in refused if kube.can_i(verb, what, NS, trigger)] == []
    assert not kube.can_i("create", "runs.pipelines.kubeflow.org", "default", trigger)  # its namespace only


def test_the_rollout_account_may_read_and_patch_inference_services_only(kube: Kube, namespaces: None) -> None:
    apply_k(kube, "staging")
    rollout = sa("rollout")
    for verb in ("get", "list", "watch", "patch"):
        assert kube.can_i(verb, "inferenceservices.serving.kserve.io", NS, rollout)
    refused = [
        ("create", "inferenceservices.serving.kserve.io"),
        ("delete", "inferenceservices.serving.kserve.io"),
        ("update", "inferenceservices.serving.kserve.io"),
        ("patch", "inferenceservices.serving.kserve.io/status"),
        ("get", "secrets"),
        ("patch", "deployments.apps"),
        ("create", "runs.pipelines.kubeflow.org"),
    ]
    assert [(verb, what) for verb, what in refused if kube.can_i(verb, what, NS, rollout)] == []
    assert not kube.can_i("patch", "inferenceservices.serving.kserve.io", "default", rollout)
