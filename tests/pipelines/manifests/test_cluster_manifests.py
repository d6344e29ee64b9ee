"""The overlays against a real kube-apiserver with the KServe, Strimzi and Prometheus Operator CRDs:
server-side dry runs and real server-side applies (schemas, admission, RBAC objects as the API
server stores them), and RBAC decisions for the platform's ServiceAccounts."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS
from tests.kube_cluster import Kube

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
OVERLAYS = ("dev", "staging", "prod")
GITOPS = "--field-manager=constructos-gitops"
NS = "constructos-ml"


@pytest.fixture(scope="module")
def namespaces(kube: Kube) -> None:
    """A server-side dry run cannot see a Namespace created in the same dry run: create them first
    (`kafka` belongs to the Strimzi installation, not to these manifests)."""
    kube.kubectl("apply", "--server-side", GITOPS, "-f", str(MANIFESTS / "base" / "platform" / "namespace.yaml"))
    kube.kubectl("create", "namespace", "kafka", check=False)


def apply_k(kube: Kube, env: str, *extra: str) -> str:
    overlay = str(MANIFESTS / "overlays" / env)
    return kube.kubectl("apply", "-k", overlay, "--server-side", GITOPS, *extra).stdout


def test_staging_server_side_dry_run_is_clean(kube: Kube, namespaces: None) -> None:
    """What a release runs first: `kubectl apply -k` (its own kustomize) into the real namespaces."""
    out = apply_k(kube, "staging", "--dry-run=server")
    lines = out.strip().splitlines()
    assert lines and all(line.endswith("serverside-applied (server dry run)") for line in lines), out
    for kind in ("inferenceservice.serving.kserve.io", "kafkatopic.kafka.strimzi.io", "podmonitor.monitoring"):
        assert any(line.startswith(kind) for line in lines), (kind, out)


def into_namespaces(resources: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """The rendered overlay moved into other namespaces (one cluster, three environments: a PVC's
    size, say, cannot change in place, so each environment gets its own)."""
    moved = copy.deepcopy(resources)
    for res in moved:
        if res["kind"] == "Namespace":
            res["metadata"]["name"] = names[res["metadata"]["name"]]
        elif "namespace" in res["metadata"]:
            res["metadata"]["namespace"] = names[res["metadata"]["namespace"]]
        for subject in res.get("subjects") or []:
            subject["namespace"] = names.get(subject.get("namespace", ""), subject.get("namespace"))
    return moved


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_overlay_dry_runs_then_applies_as_rendered(kube: Kube, kustomize: str, env: str) -> None:
    names = {NS: f"{env}-{uuid.uuid4().hex[:6]}", "kafka": f"{env}-kafka-{uuid.uuid4().hex[:6]}"}
    kube.kubectl("create", "namespace", names["kafka"])
    rendered = build(MANIFESTS / "overlays" / env)
    moved = into_namespaces(rendered, names)
    namespaces = [r for r in moved if r["kind"] == "Namespace"]
    kube.kubectl("apply", "--server-side", GITOPS, "-f", "-", stdin=yaml.safe_dump_all(namespaces))
    for extra in ("--dry-run=server", "--validate=strict"):
        out = kube.kubectl("apply", "--server-side", GITOPS, extra, "-f", "-", stdin=yaml.safe_dump_all(moved)).stdout
        assert len(out.strip().splitlines()) == len(rendered), out

    want = next(r for r in rendered if r["kind"] == "InferenceService" and r["metadata"]["name"] == "credit-risk")
    isvc = kube.get("inferenceservice", "credit-risk", "-n", names[NS])
    assert isvc["spec"]["predictor"]["minReplicas"] == want["spec"]["predictor"]["minReplicas"]
    assert isvc["spec"]["predictor"]["containers"] == want["spec"]["predictor"]["containers"]  # nothing pruned
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    topics = kube.get("kafkatopics.v1.kafka.strimzi.io", "-n", names["kafka"])["items"]
    assert len(topics) == sum(1 for r in rendered if r["kind"] == "KafkaTopic")
    monitors = kube.get("podmonitors,servicemonitors", "-n", names[NS])["items"]
    assert {m["metadata"]["name"] for m in monitors} == {"predictors", "trigger", "monitoring"}
    budgets = kube.get("pdb", "-n", names[NS])["items"]
    assert {p["metadata"]["name"] for p in budgets} == {"predictors", "mlflow", "monitoring"}
    trigger = sa("trigger").replace(f":{NS}:", f":{names[NS]}:")
    assert kube.can_i("create", "runs.pipelines.kubeflow.org", names[NS], trigger)  # the binding moved along


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
    # the same answer through `kubectl auth can-i` (impersonation), for a group the server serves
    ask = ["auth", "can-i", "-n", NS, f"--as={rollout}"]
    assert kube.kubectl(*ask, "patch", "inferenceservices.serving.kserve.io").stdout.strip() == "yes"
    assert kube.kubectl(*ask, "delete", "inferenceservices.serving.kserve.io", check=False).stdout.strip() == "no"
