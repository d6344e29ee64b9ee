"""manifests/ and `make manifests-check`: real kustomize builds, the real KServe CRD schema,
and one broken manifest per lint rule."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from feature_specs import load_spec, spec_names
from pipelines.kustomize import build
from pipelines.manifests import render
from pipelines.manifests.check import MANIFESTS, check_bundle, main
from pipelines.manifests.lint import DEPLOYMENT_MODE, containers, image_tag
from pipelines.manifests.schemas import close_schema, isvc_validator

OVERLAYS = ("dev", "staging", "prod")
Bundle = list[dict[str, Any]]


@pytest.fixture(scope="session")
def rendered(kustomize: str) -> dict[str, Bundle]:
    return {env: build(MANIFESTS / "overlays" / env, kustomize) for env in OVERLAYS}


@pytest.fixture
def staging(rendered: dict[str, Bundle]) -> Bundle:
    return copy.deepcopy(rendered["staging"])


def find(bundle: Bundle, kind: str, name: str) -> dict[str, Any]:
    return next(r for r in bundle if r["kind"] == kind and r["metadata"]["name"] == name)


def rules(bundle: Bundle) -> set[str]:
    return {f.rule for f in check_bundle(bundle)[0]}


def predictor(bundle: Bundle, name: str = "credit-risk") -> dict[str, Any]:
    return find(bundle, "InferenceService", name)["spec"]["predictor"]


def container(bundle: Bundle, kind: str = "InferenceService", name: str = "credit-risk") -> dict[str, Any]:
    return containers(find(bundle, kind, name))[0]


# --- the real overlays ----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("env", OVERLAYS)
def test_overlay_builds_and_passes_every_check(rendered: dict[str, Bundle], env: str) -> None:
    findings, notes = check_bundle(rendered[env])
    assert findings == []
    # the API server of the cluster tests checks these against their CRDs (tests/test_cluster_*.py)
    assert sorted(notes) == [
        f"{kind}: no schema here, apiVersion/kind/metadata checked only"
        for kind in (
            "kafka.strimzi.io/v1 KafkaTopic",
            "monitoring.coreos.com/v1 PodMonitor",
            "monitoring.coreos.com/v1 ServiceMonitor",
        )
    ]
    kinds = {r["kind"] for r in rendered[env]}
    assert {"InferenceService", "Deployment", "Service", "Role", "RoleBinding", "ServiceAccount"} <= kinds
    assert {"NetworkPolicy", "KafkaTopic", "ConfigMap", "Namespace"} <= kinds


@pytest.mark.integration
def test_every_model_is_served_in_knative_mode_with_its_own_name(rendered: dict[str, Bundle]) -> None:
    for env, bundle in rendered.items():
        for model in spec_names():
            isvc = find(bundle, "InferenceService", model.replace("_", "-"))
            assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE] == "Knative", env
            c = isvc["spec"]["predictor"]["containers"][0]
            assert c["command"][:3] == ["python", "-m", "predictors"]
            assert f"--model_name={model}" in c["command"]
            assert c["args"] == [f"--model_uri=models:/{model}/1"]  # a version, never the moving alias
            assert c["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{model}/ready"
            assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
            # Knative routes one port (http1): gRPC off, and the repository extension never enabled
            assert [p["name"] for p in c["ports"]] == ["http1"] and "--enable_grpc=false" in c["command"]
            assert not any(e.get("name") == "CONSTRUCTOS_ADMIN_TOKEN" for e in c.get("env", []))


@pytest.mark.integration
def test_overlays_differ_where_they_should(rendered: dict[str, Bundle]) -> None:
    def percents(env: str) -> dict[str, str]:
        return {
            r["metadata"]["name"]: r["metadata"]["annotations"]["constructos.io/canary-percent"]
            for r in rendered[env]
            if r["kind"] == "InferenceService"
        }

    assert set(percents("staging").values()) == {"10"}
    assert len(set(percents("prod").values())) > 1  # chosen per model
    assert predictor(rendered["prod"], "lead-score")["minReplicas"] > predictor(rendered["staging"])["minReplicas"]
    assert predictor(rendered["dev"])["minReplicas"] == 0
    settings = find(rendered["prod"], "ConfigMap", "platform-settings")["data"]
    assert settings["CONSTRUCTOS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    topic = find(rendered["dev"], "KafkaTopic", "finance-payment-history")
    assert topic["metadata"]["namespace"] == "kafka" and topic["spec"]["replicas"] == 1


@pytest.mark.integration
def test_trigger_rbac_is_least_privilege(staging: Bundle) -> None:
    role = find(staging, "Role", "trigger")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert ("pipelines.kubeflow.org", "runs", "create") in granted
    assert not any("*" in item for item in granted)
    assert not any(v in {"delete", "deletecollection", "escalate", "bind"} for _, _, v in granted)
    assert {g for g, _, _ in granted} == {"pipelines.kubeflow.org"}  # canaries move as `rollout`
    binding = find(staging, "RoleBinding", "trigger")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trigger", "namespace": "constructos-ml"}]
    assert find(staging, "Deployment", "trigger")["spec"]["template"]["spec"]["serviceAccountName"] == "trigger"


@pytest.mark.integration
def test_only_erp_namespaces_and_the_knative_data_plane_reach_predictors(staging: Bundle) -> None:
    policy = find(staging, "NetworkPolicy", "predictors-from-erp")
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"constructos.io/erp": "true"}}} in sources
    assert all("podSelector" not in s for s in sources)  # not even the platform's own pods
    assert find(staging, "NetworkPolicy", "default-deny-ingress")["spec"]["podSelector"] == {}


@pytest.mark.integration
def test_mlflow_server_sets_allowed_hosts_for_its_service(staging: Bundle) -> None:
    args = container(staging, "Deployment", "mlflow")["args"]
    allowed = next(a for a in args if a.startswith("--allowed-hosts="))
    tracking = find(staging, "ConfigMap", "platform-settings")["data"]["MLFLOW_TRACKING_URI"]
    host = tracking.split("//", 1)[1].rstrip("/")
    assert host in allowed.split("=", 1)[1].split(",")


# --- one broken manifest per rule -----------------------------------------------------------

Breaker = Callable[[Bundle], None]


def _canary(percent: int) -> Breaker:
    return lambda b: predictor(b).__setitem__("canaryTrafficPercent", percent)


def _mode(mode: str | None) -> Breaker:
    def breaker(b: Bundle) -> None:
        annotations = find(b, "InferenceService", "credit-risk")["metadata"]["annotations"]
        if mode is None:
            del annotations[DEPLOYMENT_MODE]
        else:
            annotations[DEPLOYMENT_MODE] = mode
        predictor(b)["canaryTrafficPercent"] = 10

    return breaker


def _alias(b: Bundle) -> None:
    predictor(b)["containers"][0]["args"] = ["--model_uri=models:/credit_risk@champion"]


def _standard_canary_list(b: Bundle) -> None:
    isvc = find(b, "InferenceService", "credit-risk")
    isvc["spec"]["canary"] = [{"trafficPercent": 10, "predictor": copy.deepcopy(isvc["spec"]["predictor"])}]


def _no_model_name(b: Bundle) -> None:
    c = container(b)
    c["command"] = [a for a in c["command"] if not a.startswith("--model_name")]


def _image(image: str) -> Breaker:
    return lambda b: container(b, "Deployment", "monitoring").__setitem__("image", image)


def _drop(key: str, kind: str = "InferenceService", name: str = "credit-risk") -> Breaker:
    return lambda b: container(b, kind, name).pop(key)


def _root_pod(b: Bundle) -> None:
    find(b, "Deployment", "trigger")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")


def _escalation(b: Bundle) -> None:
    container(b)["securityContext"]["allowPrivilegeEscalation"] = True


def _logger(b: Bundle) -> None:
    predictor(b)["logger"]["url"] = "http://monitor.constructos-ml.svc.cluster.local:8000/events"


def _other_tag(b: Bundle) -> None:
    container(b, "Deployment", "trigger")["image"] = "ghcr.io/constructos/ml-platform:0.0.9"


def _configmap_image(b: Bundle) -> None:
    find(b, "ConfigMap", "platform-settings")["data"]["CONSTRUCTOS_IMAGE"] = "ghcr.io/constructos/ml-platform:0.0.9"


def _unknown_isvc_field(b: Bundle) -> None:
    predictor(b)["canaryTrafficPercnt"] = 10  # misspelt: the API server would prune it silently


def _bad_quantity(b: Bundle) -> None:
    container(b)["resources"]["requests"]["cpu"] = "lots"


def _unknown_core_field(b: Bundle) -> None:
    find(b, "Deployment", "mlflow")["spec"]["replica"] = 2


def _unknown_container_field(b: Bundle) -> None:
    container(b, "Deployment", "trigger")["imagePullPolicie"] = "Always"


def _bad_topic_name(b: Bundle) -> None:
    find(b, "KafkaTopic", "sales-opportunities")["metadata"]["name"] = "Sales_Opportunities"


BROKEN: dict[str, tuple[Breaker, set[str]]] = {
    "canary above 100": (_canary(150), {"canary-range"}),
    "canary below 0": (_canary(-1), {"canary-range"}),
    "canary in Standard mode": (_mode("Standard"), {"canary-ignored"}),
    "canary in RawDeployment mode": (_mode("RawDeployment"), {"canary-ignored"}),
    "canary without a mode": (_mode(None), {"deployment-mode", "canary-ignored"}),
    "unknown mode": (_mode("Serverfull"), {"deployment-mode", "canary-ignored"}),
    "spec.canary in Knative mode": (_standard_canary_list, {"canary-ignored"}),
    "no --model_name": (_no_model_name, {"model-name"}),
    "image tag latest": (_image("busybox:latest"), {"image-tag"}),
    "image without tag": (_image("ghcr.io/constructos/ml-platform"), {"image-tag"}),
    "predictor without resources": (_drop("resources"), {"resources"}),
    "mlflow without resources": (_drop("resources", "Deployment", "mlflow"), {"resources"}),
    "predictor without readiness": (_drop("readinessProbe"), {"probes"}),
    "predictor without liveness": (_drop("livenessProbe"), {"probes"}),
    "mlflow without liveness": (_drop("livenessProbe", "Deployment", "mlflow"), {"probes"}),
    "predictor may run as root": (_drop("securityContext"), {"non-root"}),
    "trigger pod may run as root": (_root_pod, {"non-root"}),
    "privilege escalation": (_escalation, {"non-root"}),
    "logger to no Service": (_logger, {"logger-url"}),
    "two platform tags": (_other_tag, {"image-consistency"}),
    "settings name another image": (_configmap_image, {"image-consistency"}),
    "unknown InferenceService field": (_unknown_isvc_field, {"schema"}),
    "bad quantity": (_bad_quantity, {"schema"}),
    "unknown Deployment field": (_unknown_core_field, {"schema"}),
    "unknown container field": (_unknown_container_field, {"schema"}),
    "KafkaTopic name": (_bad_topic_name, {"sanity"}),
    "serves a moving alias": (_alias, {"pinned-version"}),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BROKEN))
def test_each_rule_catches_its_broken_manifest(staging: Bundle, case: str) -> None:
    breaker, expected = BROKEN[case]
    breaker(staging)
    assert rules(staging) == expected


@pytest.mark.integration
def test_a_digest_is_a_pinned_image(staging: Bundle) -> None:
    digest = "ghcr.io/constructos/ml-platform@sha256:" + "0" * 64
    for res in staging:
        for c in containers(res):
            c["image"] = digest
    find(staging, "ConfigMap", "platform-settings")["data"]["CONSTRUCTOS_IMAGE"] = digest
    assert rules(staging) == set()


# --- the command, end to end on a copy of manifests/ ----------------------------------------


@pytest.fixture
def manifests_copy(tmp_path: Path) -> Path:
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    return tmp_path / "manifests"


@pytest.mark.integration
def test_command_fails_on_a_broken_overlay(
    kustomize: str, manifests_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUSTOMIZE", kustomize)
    overlay = manifests_copy / "overlays" / "staging"
    assert main([str(overlay)]) == 0
    rollout = overlay / "rollout" / "lead_score.yaml"
    ops = yaml.safe_load(rollout.read_text())
    ops.append({"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 150})
    rollout.write_text(yaml.safe_dump(ops))
    assert main([str(overlay)]) == 1
    assert "InferenceService/constructos-ml/lead-score: [canary-range]" in capsys.readouterr().out


@pytest.mark.integration
def test_command_fails_when_kustomize_cannot_build(
    kustomize: str, manifests_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUSTOMIZE", kustomize)
    overlay = manifests_copy / "overlays" / "dev"
    (overlay / "predictors.yaml").unlink()
    assert main([str(overlay)]) == 1


@pytest.mark.integration
def test_the_deployed_image_reaches_the_pipeline_settings(kustomize: str, manifests_copy: Path) -> None:
    """CI pins a per-commit tag with `kustomize edit set image`; everything follows it."""
    overlay = manifests_copy / "overlays" / "staging"
    image = "ghcr.io/constructos/ml-platform:sha-1234abc"
    subprocess.run([kustomize, "edit", "set", "image", image], cwd=overlay, check=True)
    bundle = build(overlay, kustomize)
    assert {c["image"] for r in bundle for c in containers(r)} == {image}
    assert find(bundle, "ConfigMap", "platform-settings")["data"]["CONSTRUCTOS_IMAGE"] == image
    assert check_bundle(bundle)[0] == []


# --- fast checks, no kustomize --------------------------------------------------------------


def test_closed_schema_rejects_unknown_fields_but_keeps_open_maps() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "status": {"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    closed = close_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["spec"]["additionalProperties"] is False
    assert closed["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in closed["properties"]["status"]
    assert "additionalProperties" not in schema  # the input is left alone


def test_crd_schema_rejects_a_misspelt_container_field() -> None:
    isvc = next(yaml.safe_load_all((MANIFESTS / "base" / "platform" / "inferenceservices.yaml").read_text()))
    assert list(isvc_validator().iter_errors(isvc)) == []
    isvc["spec"]["predictor"]["containers"][0]["readynessProbe"] = {}
    errors = list(isvc_validator().iter_errors(isvc))
    assert len(errors) == 1 and "readynessProbe" in errors[0].message


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("a/b:1.2", "1.2"),
        ("a/b", None),
        ("host:5000/a/b", None),
        ("host:5000/a/b:x", "x"),
        ("a@sha256:ab", "sha256:ab"),
    ],
)
def test_image_tag(image: str, tag: str | None) -> None:
    assert image_tag(image) == tag


def test_kafka_topics_cover_every_topic_the_platform_uses() -> None:
    from pipelines.streaming.topics import all_topics

    kafka = MANIFESTS / "base" / "kafka"
    topics = [t for f in ("topics.yaml", "model-topics.yaml") for t in yaml.safe_load_all((kafka / f).read_text())]
    declared = {t["spec"]["topicName"] for t in topics}
    assert {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1"}  # Strimzi 1.x serves v1 only
    assert declared == set(all_topics())


def test_the_manifests_pin_the_image_the_pipelines_use() -> None:
    from pipelines.settings import Settings

    kustomization = yaml.safe_load((MANIFESTS / "base" / "platform" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert f"{image['name']}:{image['newTag']}" == Settings.model_fields["image"].default


def test_committed_manifests_are_what_the_specs_render() -> None:
    assert render.stale() == []


# --- a new spec gets its manifests from `make manifests` ----------------------------------


@pytest.mark.integration
def test_a_new_spec_is_caught_until_rendered_then_served_in_every_overlay(
    kustomize: str,
    manifests_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUSTOMIZE", kustomize)
    specs = tmp_path / "specs"
    specs.mkdir()
    raw = yaml.safe_load((Path("feature_specs") / "lead_score.yaml").read_text())
    raw |= {"name": "deal_score", "source_topic": "sales.deals", "outcome_topic": "sales.deal-outcomes"}
    (specs / "deal_score.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CONSTRUCTOS_SPEC_PATH", str(specs))
    overlays = [str(manifests_copy / "overlays" / env) for env in OVERLAYS]

    assert main(overlays) == 1  # stale, and no InferenceService or topics for the new model
    out = capsys.readouterr().out
    assert "manifests/base/platform/inferenceservices.yaml differs" in out
    assert "model deal_score: [coverage] no InferenceService deal-score" in out
    assert "model deal_score: [coverage] no KafkaTopic with topicName sales.deals.dlq" in out

    assert render.main(["--manifests", str(manifests_copy)]) == 0
    assert main(overlays) == 0
    for env, percent in (("dev", "50"), ("staging", "10"), ("prod", "10")):
        bundle = build(manifests_copy / "overlays" / env, kustomize)
        isvc = find(bundle, "InferenceService", "deal-score")
        assert isvc["metadata"]["annotations"]["constructos.io/canary-percent"] == percent
        assert isvc["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/deal_score/1"]
        assert find(bundle, "KafkaTopic", "sales-deals-dlq")["spec"]["topicName"] == "sales.deals.dlq"

    # the GitOps rollout edits the new model's overlay file like any other
    from pipelines.rollout.overlay import Overlay
    from pipelines.rollout.state import Serving

    staging = Overlay(manifests_copy / "overlays" / "staging")
    isvc = staging.get("deal_score")
    staging.apply(
        "deal_score", isvc, Serving("models:/deal_score/2", canary_percent=10, stable_uri="models:/deal_score/1")
    )
    canary = predictor(build(staging.directory, kustomize), "deal-score")
    assert canary["canaryTrafficPercent"] == 10
    assert render.main(["--manifests", str(manifests_copy), "--check"]) == 0  # rollout state is not "stale"


def test_the_installed_wheel_renders_the_same_inferenceservice(tmp_path: Path) -> None:
    """The image installs the wheel (no manifests/ beside it): its deploy step must render the
    InferenceService from the same template, not a fallback."""
    uv = shutil.which("uv")
    assert uv, "uv builds the wheel (make install puts it on PATH)"
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(tmp_path / "dist")], cwd=render.ROOT, check=True)
    site = tmp_path / "site"
    shutil.unpack_archive(next((tmp_path / "dist").glob("*.whl")), site, "zip")
    code = (
        "import json, pipelines.manifests.render as r, pipelines.training.steps.deploy as d;"
        "from feature_specs import load_spec;"
        "assert d.find_isvc('credit_risk') is None, 'the wheel has no manifests/ base';"
        "print(r.__file__); print(json.dumps(r.isvc(load_spec('credit_risk'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, rendered = done.stdout.splitlines()
    assert where.startswith(str(site))
    assert json.loads(rendered) == render.isvc(load_spec("credit_risk"))
