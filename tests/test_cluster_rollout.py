"""Rollouts against a real kube-apiserver: every command's patches as the API server stores them,
the traffic KServe would route for each stored state (``KServeStandIn`` plays the controller),
conflicts on a stale ``resourceVersion``, field ownership between GitOps and the online rollout,
and the deploy step's apply path."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.manifests import check as mc
from pipelines.rollout import cli, targets
from pipelines.rollout import plan as ro
from tests.kserve_standin import KServeStandIn
from tests.kube_cluster import Kube

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
V1, V2 = "models:/credit_risk/1", "models:/credit_risk/2"
GITOPS = "--field-manager=constructos-gitops"


def staging_isvc(namespace: str, manifests: Path = mc.MANIFESTS) -> dict[str, Any]:
    isvc = next(r for r in mc.build(manifests / "overlays" / "staging") if r["metadata"]["name"] == "credit-risk")
    isvc["metadata"]["namespace"] = namespace
    return isvc


def gitops_apply(kube: Kube, isvc: dict[str, Any], check: bool = True) -> Any:
    return kube.kubectl("apply", "--server-side", GITOPS, "-f", "-", stdin=yaml.safe_dump(isvc), check=check)


@pytest.fixture
def live(kube: Kube, kustomize: str) -> tuple[str, targets.Cluster]:
    """staging's credit-risk, applied by GitOps into a fresh namespace; the rollout's view of it."""
    namespace = kube.namespace("rollout")
    gitops_apply(kube, staging_isvc(namespace))
    return namespace, targets.Cluster(namespace, kube.admin)


def rollout(cluster: targets.Cluster, *argv: str) -> list[str]:
    args = cli.parse_args([*argv, "--namespace", cluster.namespace, "--no-aliases", "--ready-timeout", "20"])
    return cli.run(args, cluster, lambda: None)


def serving(cluster: targets.Cluster) -> ro.Serving:
    return ro.Serving.from_isvc(cluster.get("credit_risk"))


def settle(kserve: KServeStandIn) -> dict[str, int]:
    return kserve.reconcile()


# --- every command, and the traffic each stored state routes ---------------------------------


def test_start_step_promote_route_traffic_as_asked(live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        assert settle(kserve) == {V1: 100}
        rollout(cluster, "start", "credit_risk", "--version", "2")
        assert serving(cluster) == ro.Serving(V2, 10, V1, 10)
        assert settle(kserve) == {V2: 10, V1: 90}
        rollout(cluster, "step", "credit_risk", "--percent", "50")
        assert settle(kserve) == {V2: 50, V1: 50}
        rollout(cluster, "promote", "credit_risk")
        assert serving(cluster) == ro.Serving(V2, None, None, 10)
        assert settle(kserve) == {V2: 100}
    assert kserve.history == [{V1: 100}, {V2: 10, V1: 90}, {V2: 50, V1: 50}, {V2: 100}]


def test_rollback_never_sends_the_canary_more_than_its_share(live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        rollout(cluster, "start", "credit_risk", "--version", "2", "--percent", "30")
        assert settle(kserve) == {V2: 30, V1: 70}
        kserve.ready_at_once = False  # from now on a new revision takes its time
        with pytest.raises(ro.RolloutError, match="not ready after"):
            cli.run(
                cli.parse_args(
                    ["rollback", "credit_risk", "--namespace", namespace, "--no-aliases", "--ready-timeout", "1"]
                ),
                cluster,
                lambda: None,
            )
        # pinned at 0% and the previous spec restored, its new revision not ready: all on the old one
        assert serving(cluster) == ro.Serving(V1, 0, V1, 10)
        assert settle(kserve) == {V1: 100}
        kserve.make_ready()
        out = rollout(cluster, "rollback", "credit_risk")  # re-run: waits for the revision, then finishes
        assert any("is ready" in line for line in out)
        assert serving(cluster) == ro.Serving(V1, None, None, 10)
        assert settle(kserve) == {V1: 100}
    canary_at = kserve.history.index({V2: 30, V1: 70})
    assert all(split.get(V2, 0) == 0 for split in kserve.history[canary_at + 1 :]), kserve.history


def test_the_old_single_patch_rollback_would_send_everything_to_the_canary(live: tuple[str, targets.Cluster]) -> None:
    """The stand-in can tell: restoring the spec and dropping the canary field in one patch routes
    100% to the latest ready revision — the bad canary — until the restored one is ready."""
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        rollout(cluster, "start", "credit_risk", "--version", "2", "--percent", "30")
        assert settle(kserve) == {V2: 30, V1: 70}
        kserve.ready_at_once = False
        isvc = cluster.get("credit_risk")
        cluster.apply("credit_risk", isvc, ro.Serving(V1, None, None, 10))
        assert settle(kserve) == {V2: 100}


def test_auto_climbs_and_promotes_against_the_api(live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live
    args = cli.parse_args(
        ["auto", "credit_risk", "--namespace", namespace, "--no-aliases", "--version", "2", "--interval", "0"]
    )
    verdict = argparse.Namespace(decision="promote", reasons=[])
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        seen: list[dict[str, int]] = []

        def analyse() -> Any:
            seen.append(settle(kserve))
            return verdict

        assert cli.auto(args, cluster, lambda: None, lambda line: None, analyse, sleep=lambda s: None) == "promote"
        assert settle(kserve) == {V2: 100}
    assert seen == [{V2: 10, V1: 90}, {V2: 25, V1: 75}, {V2: 50, V1: 50}, {V2: 100}]


def test_start_refuses_a_stable_revision_that_serves_a_moving_alias(kube: Kube, kustomize: str) -> None:
    namespace = kube.namespace("rollout")
    isvc = staging_isvc(namespace)
    isvc["spec"]["predictor"]["containers"][0]["args"] = ["--model_uri=models:/credit_risk@champion"]
    gitops_apply(kube, isvc)
    cluster = targets.Cluster(namespace, kube.admin)
    with pytest.raises(ro.RolloutError, match="moving alias; `pin` a version first"):
        rollout(cluster, "start", "credit_risk", "--version", "2")
    rollout(cluster, "pin", "credit_risk", "--version", "1")
    assert serving(cluster).model_uri == V1


# --- conflicts ------------------------------------------------------------------------------


class Racing(targets.Cluster):
    """Someone else writes the InferenceService right after each of the first ``races`` reads."""

    def __init__(self, namespace: str, api: Any, races: int) -> None:
        super().__init__(namespace, api)
        self.races = races

    def get(self, model: str) -> ro.Resource:
        isvc = super().get(model)
        if self.races > 0:
            self.races -= 1
            body = {"metadata": {"labels": {"touched": str(self.races)}}}
            self.api.patch_namespaced_custom_object(
                ro.GROUP, ro.VERSION, self.namespace, ro.PLURAL, "credit-risk", body
            )
        return isvc


def test_a_stale_resource_version_is_a_conflict_then_retried(live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live
    stale = cluster.get("credit_risk")
    cluster.api.patch_namespaced_custom_object(
        ro.GROUP, ro.VERSION, namespace, ro.PLURAL, "credit-risk", {"metadata": {"labels": {"other": "writer"}}}
    )
    with pytest.raises(targets.Conflict):
        cluster.apply("credit_risk", stale, ro.Serving(V2, 10, V1, 10))
    assert serving(cluster) == ro.Serving(V1, None, None, 10)  # nothing overwritten

    out = rollout(Racing(namespace, cluster.api, races=2), "start", "credit_risk", "--version", "2")
    assert sum(line.startswith("conflict:") for line in out) == 2
    assert serving(cluster) == ro.Serving(V2, 10, V1, 10)
    assert cluster.get("credit_risk")["metadata"]["labels"]["touched"] == "0"  # the other writes were kept

    with pytest.raises(ro.RolloutError, match="gave up after 4 attempts"):
        rollout(Racing(namespace, cluster.api, races=9), "step", "credit_risk", "--percent", "40")
    assert serving(cluster).canary_percent == 10


def test_a_replanned_command_respects_what_the_other_writer_did(live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live

    class Promoter(targets.Cluster):  # someone promotes the canary between our read and our patch
        def get(self, model: str) -> ro.Resource:
            isvc = super().get(model)
            if ro.Serving.from_isvc(isvc).canary_running and not hasattr(self, "done"):
                self.done = True
                targets.Cluster(namespace, self.api).apply(model, isvc, ro.Serving(V2, None, None, 10))
            return isvc

    rollout(cluster, "start", "credit_risk", "--version", "2")
    with pytest.raises(ro.RolloutError, match="no canary is running"):
        rollout(Promoter(namespace, cluster.api), "step", "credit_risk", "--percent", "50")
    assert serving(cluster) == ro.Serving(V2, None, None, 10)


# --- one owner per field: GitOps (server-side apply) and the online rollout -------------------


def managers(cluster: targets.Cluster) -> dict[str, str]:
    isvc = cluster.get("credit_risk")
    return {m["manager"]: m["operation"] for m in isvc["metadata"]["managedFields"]}


def test_gitops_cannot_silently_undo_a_running_canary(
    kube: Kube, live: tuple[str, targets.Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, cluster = live
    rollout(cluster, "start", "credit_risk", "--version", "2")
    assert managers(cluster) == {"constructos-gitops": "Apply", "constructos-rollout": "Update"}

    stale = gitops_apply(kube, staging_isvc(namespace), check=False)  # the overlay still says version 1
    assert stale.returncode != 0
    assert "conflict" in stale.stderr.lower() and "constructos-rollout" in stale.stderr
    assert ".spec.predictor.containers" in stale.stderr
    assert serving(cluster) == ro.Serving(V2, 10, V1, 10)  # the canary runs on

    manifests = tmp_path / "manifests"
    shutil.copytree(mc.MANIFESTS, manifests)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    argv = ["sync", "credit_risk", "--namespace", namespace, "--overlay", "staging", "--manifests", str(manifests)]
    assert cli.main(argv) == 0
    gitops_apply(kube, staging_isvc(namespace, manifests))  # the synced overlay agrees: no conflict
    assert serving(cluster) == ro.Serving(V2, 10, V1, 10)

    rollout(cluster, "promote", "credit_risk")  # the rollout may still move its fields
    assert serving(cluster) == ro.Serving(V2, None, None, 10)


def test_gitops_still_owns_everything_else(kube: Kube, live: tuple[str, targets.Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk"):
        rollout(cluster, "start", "credit_risk", "--version", "2")
        rollout(cluster, "rollback", "credit_risk")
    isvc = staging_isvc(namespace)
    isvc["spec"]["predictor"]["maxReplicas"] = 5
    gitops_apply(kube, isvc)  # back on version 1: the rollout's value agrees, so no conflict
    assert cluster.get("credit_risk")["spec"]["predictor"]["maxReplicas"] == 5
    assert serving(cluster) == ro.Serving(V1, None, None, 10)


# --- the deploy step's apply path ------------------------------------------------------------


def test_the_deploy_step_pins_a_first_champion_and_starts_a_canary(
    kube: Kube, live: tuple[str, targets.Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_specs import load_spec
    from pipelines.training.steps import deploy

    namespace, cluster = live
    (tmp_path / "namespace").write_text(namespace)
    monkeypatch.setattr(deploy, "_NAMESPACE_FILE", tmp_path / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")  # "inside a cluster": kubeconfig fallback
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))

    deploy.apply_isvc("credit_risk", "3", None)
    assert serving(cluster) == ro.Serving("models:/credit_risk/3", None, None, 10)
    image = "ghcr.io/constructos/ml-platform:0.1.0"
    registration = deploy.Registration("4", "challenger")
    outcome = deploy.deploy_isvc(
        load_spec("credit_risk"), registration, tmp_path / "isvc.yaml", canary_percent=-1, image=image
    )
    assert outcome.startswith(f"patch InferenceService {namespace}/credit-risk")
    assert serving(cluster) == ro.Serving(
        "models:/credit_risk/4", load_spec("credit_risk").rollout.canary_percent, "models:/credit_risk/3", 10
    )
    artifact = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert artifact["spec"]["predictor"]["containers"][0]["image"] == image  # a tagged image, not the bare name
    assert managers(cluster)["constructos-rollout"] == "Update"
