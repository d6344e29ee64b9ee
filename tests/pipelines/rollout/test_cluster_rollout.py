"""Rollouts against a real kube-apiserver: every command's patches as the API server stores them,
the traffic KServe would route for each stored state (``KServeStandIn`` plays the controller),
conflicts on a stale ``resourceVersion``, field ownership between GitOps and the online rollout,
and the deploy step's apply path."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS
from pipelines.rollout import cli
from pipelines.rollout.cluster import Cluster, Conflict, start_canary
from pipelines.rollout.state import (
    GROUP,
    MODE_ANNOTATION,
    PLURAL,
    VERSION,
    Resource,
    RolloutError,
    Serving,
    model_uri_of,
    predictor_service,
)
from tests.kserve_standin import KServeStandIn
from tests.kube_cluster import Kube

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
V1, V2 = "models:/credit_risk/1", "models:/credit_risk/2"
GITOPS = "--field-manager=constructos-gitops"


def staging_isvc(namespace: str, manifests: Path = MANIFESTS) -> dict[str, Any]:
    isvc = next(r for r in build(manifests / "overlays" / "staging") if r["metadata"]["name"] == "credit-risk")
    isvc["metadata"]["namespace"] = namespace
    return isvc


def gitops_apply(kube: Kube, isvc: dict[str, Any], check: bool = True) -> Any:
    return kube.kubectl("apply", "--server-side", GITOPS, "-f", "-", stdin=yaml.safe_dump(isvc), check=check)


@pytest.fixture
def live(kube: Kube, kustomize: str) -> tuple[str, Cluster]:
    """staging's credit-risk, applied by GitOps into a fresh namespace; the rollout's view of it."""
    namespace = kube.namespace("rollout")
    gitops_apply(kube, staging_isvc(namespace))
    return namespace, Cluster(namespace, kube.admin)


def rollout(cluster: Cluster, *argv: str) -> list[str]:
    args = cli.parse_args([*argv, "--namespace", cluster.namespace, "--no-aliases", "--ready-timeout", "20"])
    return cli.run(args, cluster, lambda: None)


def serving(cluster: Cluster) -> Serving:
    return Serving.from_isvc(cluster.get("credit_risk"))


def settle(kserve: KServeStandIn) -> dict[str, int]:
    return kserve.reconcile()


# --- every command, and the traffic each stored state routes ---------------------------------


def test_start_step_promote_route_traffic_as_asked(live: tuple[str, Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        assert settle(kserve) == {V1: 100}
        rollout(cluster, "start", "credit_risk", "--version", "2")
        assert serving(cluster) == Serving(V2, 10, V1, 10)
        assert settle(kserve) == {V2: 10, V1: 90}
        rollout(cluster, "step", "credit_risk", "--percent", "50")
        assert settle(kserve) == {V2: 50, V1: 50}
        rollout(cluster, "promote", "credit_risk")
        assert serving(cluster) == Serving(V2, None, None, 10)
        assert settle(kserve) == {V2: 100}
    assert kserve.history == [{V1: 100}, {V2: 10, V1: 90}, {V2: 50, V1: 50}, {V2: 100}]


def test_rollback_never_sends_the_canary_more_than_its_share(live: tuple[str, Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        rollout(cluster, "start", "credit_risk", "--version", "2", "--percent", "30")
        assert settle(kserve) == {V2: 30, V1: 70}
        kserve.ready_at_once = False  # from now on a new revision takes its time
        with pytest.raises(RolloutError, match="not ready after"):
            cli.run(
                cli.parse_args(
                    ["rollback", "credit_risk", "--namespace", namespace, "--no-aliases", "--ready-timeout", "1"]
                ),
                cluster,
                lambda: None,
            )
        # pinned at 0% and the previous spec restored, its new revision not ready: all on the old one
        assert serving(cluster) == Serving(V1, 0, V1, 10)
        assert settle(kserve) == {V1: 100}
        kserve.make_ready()
        out = rollout(cluster, "rollback", "credit_risk")  # re-run: waits for the revision, then finishes
        assert any("is ready" in line for line in out)
        assert serving(cluster) == Serving(V1, None, None, 10)
        assert settle(kserve) == {V1: 100}
    canary_at = kserve.history.index({V2: 30, V1: 70})
    assert all(split.get(V2, 0) == 0 for split in kserve.history[canary_at + 1 :]), kserve.history


def test_the_old_single_patch_rollback_would_send_everything_to_the_canary(live: tuple[str, Cluster]) -> None:
    """The stand-in can tell: restoring the spec and dropping the canary field in one patch routes
    100% to the latest ready revision — the bad canary — until the restored one is ready."""
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
        rollout(cluster, "start", "credit_risk", "--version", "2", "--percent", "30")
        assert settle(kserve) == {V2: 30, V1: 70}
        kserve.ready_at_once = False
        isvc = cluster.get("credit_risk")
        cluster.apply("credit_risk", isvc, Serving(V1, None, None, 10))
        assert settle(kserve) == {V2: 100}


def test_auto_climbs_and_promotes_against_the_api(live: tuple[str, Cluster]) -> None:
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
    cluster = Cluster(namespace, kube.admin)
    with pytest.raises(RolloutError, match="moving alias; `pin` a version first"):
        rollout(cluster, "start", "credit_risk", "--version", "2")
    rollout(cluster, "pin", "credit_risk", "--version", "1")
    assert serving(cluster).model_uri == V1


# --- conflicts ------------------------------------------------------------------------------


class Racing(Cluster):
    """Someone else writes the InferenceService right after each of the first ``races`` reads."""

    def __init__(self, namespace: str, api: Any, races: int) -> None:
        super().__init__(namespace, api)
        self.races = races

    def get(self, model: str) -> Resource:
        isvc = super().get(model)
        if self.races > 0:
            self.races -= 1
            body = {"metadata": {"labels": {"touched": str(self.races)}}}
            self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "credit-risk", body)
        return isvc


def test_a_stale_resource_version_is_a_conflict_then_retried(live: tuple[str, Cluster]) -> None:
    namespace, cluster = live
    stale = cluster.get("credit_risk")
    cluster.api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "credit-risk", {"metadata": {"labels": {"other": "writer"}}}
    )
    with pytest.raises(Conflict):
        cluster.apply("credit_risk", stale, Serving(V2, 10, V1, 10))
    assert serving(cluster) == Serving(V1, None, None, 10)  # nothing overwritten

    out = rollout(Racing(namespace, cluster.api, races=2), "start", "credit_risk", "--version", "2")
    assert sum(line.startswith("conflict:") for line in out) == 2
    assert serving(cluster) == Serving(V2, 10, V1, 10)
    assert cluster.get("credit_risk")["metadata"]["labels"]["touched"] == "0"  # the other writes were kept

    with pytest.raises(RolloutError, match="gave up after 4 attempts"):
        rollout(Racing(namespace, cluster.api, races=9), "step", "credit_risk", "--percent", "40")
    assert serving(cluster).canary_percent == 10


def test_a_replanned_command_respects_what_the_other_writer_did(live: tuple[str, Cluster]) -> None:
    namespace, cluster = live

    class Promoter(Cluster):  # someone promotes the canary between our read and our patch
        def get(self, model: str) -> Resource:
            isvc = super().get(model)
            if Serving.from_isvc(isvc).canary_running and not hasattr(self, "done"):
                self.done = True
                Cluster(namespace, self.api).apply(model, isvc, Serving(V2, None, None, 10))
            return isvc

    rollout(cluster, "start", "credit_risk", "--version", "2")
    with pytest.raises(RolloutError, match="no canary is running"):
        rollout(Promoter(namespace, cluster.api), "step", "credit_risk", "--percent", "50")
    assert serving(cluster) == Serving(V2, None, None, 10)


# --- one owner per field: GitOps (server-side apply) and the online rollout -------------------


def managers(cluster: Cluster) -> dict[str, str]:
    isvc = cluster.get("credit_risk")
    return {m["manager"]: m["operation"] for m in isvc["metadata"]["managedFields"]}


def test_gitops_cannot_silently_undo_a_running_canary(
    kube: Kube, live: tuple[str, Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, cluster = live
    rollout(cluster, "start", "credit_risk", "--version", "2")
    assert managers(cluster) == {"constructos-gitops": "Apply", "constructos-rollout": "Update"}

    stale = gitops_apply(kube, staging_isvc(namespace), check=False)  # the overlay still says version 1
    assert stale.returncode != 0
    assert "conflict" in stale.stderr.lower() and "constructos-rollout" in stale.stderr
    assert ".spec.predictor.containers" in stale.stderr
    assert serving(cluster) == Serving(V2, 10, V1, 10)  # the canary runs on

    manifests = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, manifests)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    argv = ["sync", "credit_risk", "--namespace", namespace, "--overlay", "staging", "--manifests", str(manifests)]
    assert cli.main(argv) == 0
    gitops_apply(kube, staging_isvc(namespace, manifests))  # the synced overlay agrees: no conflict
    assert serving(cluster) == Serving(V2, 10, V1, 10)

    rollout(cluster, "promote", "credit_risk")  # the rollout may still move its fields
    assert serving(cluster) == Serving(V2, None, None, 10)


def test_gitops_still_owns_everything_else(kube: Kube, live: tuple[str, Cluster]) -> None:
    namespace, cluster = live
    with KServeStandIn(cluster.api, namespace, "credit-risk"):
        rollout(cluster, "start", "credit_risk", "--version", "2")
        rollout(cluster, "rollback", "credit_risk")
    isvc = staging_isvc(namespace)
    isvc["spec"]["predictor"]["maxReplicas"] = 5
    gitops_apply(kube, isvc)  # back on version 1: the rollout's value agrees, so no conflict
    assert cluster.get("credit_risk")["spec"]["predictor"]["maxReplicas"] == 5
    assert serving(cluster) == Serving(V1, None, None, 10)


# --- the deploy step's apply path ------------------------------------------------------------


def test_the_deploy_step_pins_a_first_champion_and_starts_a_canary(
    kube: Kube, live: tuple[str, Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_specs import load_spec
    from pipelines.training.steps import deploy

    namespace, cluster = live
    (tmp_path / "namespace").write_text(namespace)
    monkeypatch.setattr(deploy, "_NAMESPACE_FILE", tmp_path / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")  # "inside a cluster": kubeconfig fallback
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))

    deploy.apply_isvc("credit_risk", "3", None)
    assert serving(cluster) == Serving("models:/credit_risk/3", None, None, 10)
    image = "ghcr.io/constructos/ml-platform:0.1.0"
    registration = deploy.Registration("4", "challenger")
    outcome = deploy.deploy_isvc(
        load_spec("credit_risk"), registration, tmp_path / "isvc.yaml", canary_percent=-1, image=image
    )
    assert outcome.startswith(f"patch InferenceService {namespace}/credit-risk")
    assert serving(cluster) == Serving(
        "models:/credit_risk/4", load_spec("credit_risk").rollout.canary_percent, "models:/credit_risk/3", 10
    )
    artifact = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert artifact["spec"]["predictor"]["containers"][0]["image"] == image  # a tagged image, not the bare name
    assert managers(cluster)["constructos-rollout"] == "Update"


# --- Standard mode (spec.canary) and blue-green -------------------------------------------------


class StandardStandIn:
    """KServe v0.20.0's Standard-mode reconciler, played on the real API server (no controllers):

    * ``spec.predictor`` -> Deployment ``<isvc>-predictor``; each ``spec.canary`` entry -> Deployment
      ``<isvc>-<name>-predictor`` running the entry's containers (``minReplicas`` or its share of
      the stable's), orphans deleted (``reconcileCanaryDeployments``);
    * a changed pod template rolls: the old pods keep serving until the new ones are ready (KServe's
      RollingUpdate, ``maxUnavailable: 0``) — at once, or when the test calls ``make_ready()``;
      a Deployment in ``failing`` never gets a ready pod (its pod fails the readiness probe);
    * Deployment status and ``status.canaryStatuses`` (ready = an available replica) are written
      as the controllers would;
    * the gateway's split is the HTTPRoute of kserve#5912 *without* the readiness gate of #5984:
      every canary gets its ``trafficPercent`` whether ready or not, the stable the rest. So a
      share given to a canary with no ready pod shows up as ``UNREADY`` (failed requests): the
      rollout has to keep it at 0% by itself.

    ``history`` keeps each split (model URI -> percent) the thread saw."""

    def __init__(self, api: Any, namespace: str, name: str, *, failing: frozenset[str] = frozenset()) -> None:
        from kubernetes import client

        self.api, self.namespace, self.name = api, namespace, name
        self.apps = client.AppsV1Api(api.api_client)
        self.core = client.CoreV1Api(api.api_client)
        self.ready_at_once = True
        self.failing = set(failing)
        self.serving: dict[str, str | None] = {}  # Deployment -> URI its ready pods serve
        self.history: list[dict[str, int]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StandardStandIn:
        self.reconcile()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is not None and exc[0] is None:
            raise self.error

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.reconcile()
            except Exception as e:  # surfaced by __exit__: a dead stand-in must fail the test
                self.error = e
                return

    def make_ready(self) -> None:
        with self._lock:
            self.ready_at_once = True
        self.reconcile()

    def deployments(self) -> dict[str, Any]:
        found = self.apps.list_namespaced_deployment(self.namespace, label_selector=f"isvc={self.name}")
        return {d.metadata.name: d for d in found.items}

    def _deployment(self, name: str, uri: str, replicas: int, existing: Any) -> None:
        labels = {"app": f"isvc.{name}", "isvc": self.name}
        container = {"name": "kserve-container", "image": "platform:test", "args": [f"--model_uri={uri}"]}
        spec = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        }
        if existing is None:
            body = {"metadata": {"name": name, "labels": labels}, "spec": spec}
            self.apps.create_namespaced_deployment(self.namespace, body)
            self.serving[name] = None
        elif existing.spec.template.spec.containers[0].args != container["args"] or existing.spec.replicas != replicas:
            self.apps.patch_namespaced_deployment(name, self.namespace, {"spec": spec})

    def _status(self, name: str, uri: str) -> None:
        dep = self.apps.read_namespaced_deployment(name, self.namespace)
        wanted = dep.spec.replicas
        if name not in self.failing and self.ready_at_once:
            self.serving[name] = uri
        rolled = self.serving.get(name) == uri
        available = wanted if self.serving.get(name) else 0
        status = {
            "observedGeneration": dep.metadata.generation,
            "replicas": wanted if rolled or not available else wanted + 1,  # + the surge pod of a roll
            "updatedReplicas": wanted if rolled else 1,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": "True" if available else "False", "reason": "x"}],
        }
        self.apps.patch_namespaced_deployment_status(name, self.namespace, {"status": status})
        if name in self.failing:  # its pod runs, its readiness probe fails
            self._pod(name)

    def _pod(self, deployment: str) -> None:
        pod = f"{deployment}-0"
        try:
            self.core.read_namespaced_pod(pod, self.namespace)
        except Exception:
            with contextlib.suppress(Exception):  # no service-account controller here
                self.core.create_namespaced_service_account(self.namespace, {"metadata": {"name": "default"}})
            body = {
                "metadata": {"name": pod, "labels": {"app": f"isvc.{deployment}"}},
                "spec": {"containers": [{"name": "kserve-container", "image": "platform:test"}]},
            }
            self.core.create_namespaced_pod(self.namespace, body)
            running = {"name": "kserve-container", "ready": False, "restartCount": 0, "image": "platform:test"}
            running |= {"imageID": "", "state": {"running": {"startedAt": "2026-12-03T00:00:00Z"}}}
            self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": {"containerStatuses": [running]}})

    def reconcile(self) -> dict[str, int]:
        with self._lock:
            isvc = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
            predictor = isvc["spec"]["predictor"]
            stable_min = int(predictor.get("minReplicas", 1))
            wanted: dict[str, tuple[str, int, int]] = {}  # Deployment -> (URI, replicas, weight)
            canaries = isvc["spec"].get("canary") or []
            for entry in canaries:
                canary = entry["predictor"]
                uri = model_uri_of((canary.get("containers") or predictor["containers"])[0])
                replicas = canary.get("minReplicas") or math.ceil(stable_min * entry["trafficPercent"] / 100)
                wanted[predictor_service(self.name, canary["name"])] = (uri, replicas, entry["trafficPercent"])
            taken = sum(r for _, r, _ in wanted.values())
            stable_weight = 100 - sum(w for _, _, w in wanted.values())
            stable = predictor_service(self.name, predictor.get("name"))
            wanted[stable] = (model_uri_of(predictor["containers"][0]), max(stable_min - taken, 1), stable_weight)
            existing = self.deployments()
            for name, (uri, replicas, _) in wanted.items():
                self._deployment(name, uri, replicas, existing.get(name))
                self._status(name, uri)
            for name in set(existing) - set(wanted):  # orphan cleanup
                self.apps.delete_namespaced_deployment(name, self.namespace)
                self.serving.pop(name, None)
            statuses = [
                {"name": e["predictor"]["name"], "ready": bool(self.serving.get(n)), "trafficPercent": w}
                for e, (n, (_, _, w)) in zip(canaries, list(wanted.items())[:-1], strict=True)
            ]
            status = {"canaryStatuses": statuses} if statuses else {"canaryStatuses": None}
            if {k: isvc.get("status", {}).get(k) for k in status} != status:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": status}
                )
            split: Counter[str] = Counter()
            for name, (_, _, weight) in wanted.items():
                if weight:
                    split[self.serving.get(name) or "UNREADY"] += weight
            shares = {uri: p for uri, p in split.items() if p}
            if not self.history or self.history[-1] != shares:
                self.history.append(shares)
            return shares


def standard_isvc(namespace: str) -> dict[str, Any]:
    """staging's credit-risk in Standard mode on two fixed replicas (as the node overlay has it)."""
    isvc = staging_isvc(namespace)
    isvc["metadata"]["annotations"][MODE_ANNOTATION] = "Standard"
    isvc["spec"]["predictor"] |= {"minReplicas": 2, "maxReplicas": 2}
    for key in ("scaleMetric", "scaleTarget"):
        isvc["spec"]["predictor"].pop(key, None)
    return isvc


@pytest.fixture
def standard_live(kube: Kube, kustomize: str) -> tuple[str, Cluster]:
    namespace = kube.namespace("rollout-std")
    gitops_apply(kube, standard_isvc(namespace))
    return namespace, Cluster(namespace, kube.admin)


def std(cluster: Cluster, *argv: str, timeout: float = 20, check: Any = None) -> list[str]:
    args = cli.parse_args(
        [*argv, "--namespace", cluster.namespace, "--no-aliases", "--ready-timeout", str(timeout), "--drain", "0"]
    )
    return cli.run(args, cluster, lambda: None, check)


def never_unready(history: list[dict[str, int]]) -> bool:
    return all("UNREADY" not in split for split in history)


def test_standard_canary_ladder_and_promote_route_only_to_ready_predictors(
    standard_live: tuple[str, Cluster],
) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
        assert kserve.reconcile() == {V1: 100}
        out = std(cluster, "start", "credit_risk", "--version", "2")
        assert any("canary v2 serves models:/credit_risk/2, every replica ready" in line for line in out)
        state = serving(cluster)
        assert (state.model_uri, state.canary_uri, state.canary_name, state.canary_percent) == (V1, V2, "v2", 10)
        assert kserve.reconcile() == {V1: 90, V2: 10}
        assert "credit-risk-v2-predictor" in kserve.deployments()
        status = std(cluster, "status", "credit_risk")
        assert (
            "canary entry:   v2 -> models:/credit_risk/2, 1 replica(s), Deployment credit-risk-v2-predictor" in status
        )
        assert "canary status:  v2 ready=True trafficPercent=10" in status
        std(cluster, "step", "credit_risk", "--percent", "50")
        assert kserve.reconcile() == {V1: 50, V2: 50}
        out = std(cluster, "promote", "credit_risk")
        assert any("stable predictor serves models:/credit_risk/2" in line for line in out)
        assert serving(cluster) == Serving(V2, mode="Standard")
        assert kserve.reconcile() == {V2: 100}
        assert set(kserve.deployments()) == {"credit-risk-predictor"}  # KServe deleted the canary's
    assert never_unready(kserve.history), kserve.history
    assert kserve.history[:3] == [{V1: 100}, {V1: 90, V2: 10}, {V1: 50, V2: 50}]
    assert kserve.history[-1] == {V2: 100}


def test_a_standard_canary_that_never_gets_ready_never_gets_traffic(
    standard_live: tuple[str, Cluster],
) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(
        cluster.api, namespace, "credit-risk", failing=frozenset({"credit-risk-v2-predictor"})
    ) as kserve:
        with pytest.raises(RolloutError) as stopped:
            std(cluster, "start", "credit_risk", "--version", "2", "--percent", "30", timeout=2)
        reason = str(stopped.value)
        assert "canary v2 (models:/credit_risk/2) is not ready after 2s" in reason
        assert "0/1 replicas available" in reason and "readiness probe failing" in reason
        assert "It gets no more traffic (0%)" in reason
        assert serving(cluster).canary_percent == 0
        std(cluster, "rollback", "credit_risk")
        assert serving(cluster) == Serving(V1, mode="Standard")
        assert kserve.reconcile() == {V1: 100}
    assert all(split == {V1: 100} for split in kserve.history), kserve.history


def test_standard_auto_rolls_back_a_canary_that_never_gets_ready(standard_live: tuple[str, Cluster]) -> None:
    namespace, cluster = standard_live
    args = cli.parse_args(
        [
            *("auto", "credit_risk", "--namespace", namespace, "--no-aliases", "--version", "2"),
            *("--interval", "0", "--ready-timeout", "2", "--drain", "0"),
        ]
    )
    said: list[str] = []
    with StandardStandIn(
        cluster.api, namespace, "credit-risk", failing=frozenset({"credit-risk-v2-predictor"})
    ) as kserve:
        outcome = cli.auto(args, cluster, lambda: None, said.append, lambda: pytest.fail("analysed"), lambda s: None)
    assert outcome == "rollback"
    assert any(line.startswith("stopped before any traffic reached the new version") for line in said)
    assert serving(cluster) == Serving(V1, mode="Standard")
    assert all(split == {V1: 100} for split in kserve.history), kserve.history


def test_standard_promote_waits_until_the_stable_has_rolled_out(standard_live: tuple[str, Cluster]) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
        std(cluster, "start", "credit_risk", "--version", "2", "--percent", "25")
        kserve.ready_at_once = False  # the stable's new pods take their time
        with pytest.raises(RolloutError, match="the stable predictor does not serve models:/credit_risk/2 after 1s"):
            std(cluster, "promote", "credit_risk", timeout=1)
        state = serving(cluster)  # switched, still rolling: the old pods serve, the canary keeps its share
        assert (state.model_uri, state.canary_percent) == (V2, 25)
        assert kserve.reconcile() == {V1: 75, V2: 25}
        kserve.make_ready()
        std(cluster, "promote", "credit_risk")  # re-run: waits for it, drains, removes
        assert serving(cluster) == Serving(V2, mode="Standard")
        assert kserve.reconcile() == {V2: 100}
    assert never_unready(kserve.history), kserve.history
    assert kserve.history == [{V1: 100}, {V1: 75, V2: 25}, {V2: 100}]


def test_standard_rollback_takes_the_share_away_before_removing_the_canary(
    standard_live: tuple[str, Cluster],
) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
        std(cluster, "start", "credit_risk", "--version", "2", "--percent", "30")
        assert kserve.reconcile() == {V1: 70, V2: 30}
        std(cluster, "rollback", "credit_risk")
        assert serving(cluster) == Serving(V1, mode="Standard")
        assert kserve.reconcile() == {V1: 100}
        assert set(kserve.deployments()) == {"credit-risk-predictor"}
    assert kserve.history == [{V1: 100}, {V1: 70, V2: 30}, {V1: 100}]


class SmokeServer:
    """A V2 endpoint on loopback answering as ``version`` (the new version's own Service)."""

    def __init__(self, version: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200 if self.path == "/v2/models/credit_risk/ready" else 404, {})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(request)
                rows = request["inputs"][0]["shape"][0]
                outputs = [{"name": "probability", "data": [0.2] * rows}, {"name": "label", "data": [False] * rows}]
                self._send(200, {"model_name": "credit_risk", "model_version": outer.version, "outputs": outputs})

            def log_message(self, *args: Any) -> None:
                pass

        self.version = version
        self.requests: list[Any] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_blue_green_deploys_at_zero_switches_after_the_smoke_test_and_switches_back(
    standard_live: tuple[str, Cluster],
) -> None:
    namespace, cluster = standard_live
    green = SmokeServer("2")
    try:
        with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
            std(cluster, "start", "credit_risk", "--version", "2", "--strategy", "blue-green")
            state = serving(cluster)
            assert (state.canary_percent, state.canary_replicas, state.strategy) == (0, 2, "blue-green")
            assert kserve.reconcile() == {V1: 100}  # deployed, full-sized, no traffic
            assert kserve.deployments()["credit-risk-v2-predictor"].spec.replicas == 2
            with pytest.raises(RolloutError, match="`switch`"):
                std(cluster, "step", "credit_risk", "--percent", "50")
            out = std(cluster, "switch", "credit_risk", "--smoke-url", green.url)
            assert out[0] == f"smoke test passed: {green.url} answers as version 2"
            assert len(green.requests) == 1
            assert kserve.reconcile() == {V2: 100}  # at once
            std(cluster, "rollback", "credit_risk")  # back to blue, still running
            assert kserve.reconcile() == {V1: 100}
            assert serving(cluster) == Serving(V1, mode="Standard")

            std(cluster, "start", "credit_risk", "--version", "2", "--strategy", "blue-green")
            std(cluster, "switch", "credit_risk", "--smoke-url", green.url)
            std(cluster, "promote", "credit_risk")  # blue retired: the stable runs green's version
            assert serving(cluster) == Serving(V2, mode="Standard")
            assert kserve.reconcile() == {V2: 100}
            assert set(kserve.deployments()) == {"credit-risk-predictor"}
    finally:
        green.close()
    assert never_unready(kserve.history), kserve.history
    assert kserve.history == [{V1: 100}, {V2: 100}, {V1: 100}, {V2: 100}]


def test_a_failed_smoke_test_switches_nothing(standard_live: tuple[str, Cluster]) -> None:
    namespace, cluster = standard_live
    wrong = SmokeServer("7")  # answers, but as another version
    try:
        with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
            std(cluster, "start", "credit_risk", "--version", "2", "--strategy", "blue-green")
            with pytest.raises(RolloutError, match=r"smoke test of models:/credit_risk/2 .* failed: answer is from"):
                std(cluster, "switch", "credit_risk", "--smoke-url", wrong.url)
            assert serving(cluster).canary_percent == 0
            with pytest.raises(RolloutError, match="ConnectError"):
                std(cluster, "smoke", "credit_risk", "--smoke-url", "http://127.0.0.1:9")
    finally:
        wrong.close()
    assert all(split == {V1: 100} for split in kserve.history)


def test_the_smoke_url_is_the_new_versions_own_service(kube: Kube, standard_live: tuple[str, Cluster]) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk"):
        std(cluster, "start", "credit_risk", "--version", "2", "--strategy", "blue-green")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "credit-risk-v2-predictor", "namespace": namespace},
        "spec": {"selector": {"app": "isvc.credit-risk-v2-predictor"}, "ports": [{"name": "http", "port": 80}]},
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(service))
    ip = kube.get("service", "-n", namespace, "credit-risk-v2-predictor")["spec"]["clusterIP"]
    assert cluster.smoke_url("credit_risk") == f"http://{ip}:80"


def test_gitops_apply_keeps_a_running_standard_canary(kube: Kube, standard_live: tuple[str, Cluster]) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
        std(cluster, "start", "credit_risk", "--version", "2")
        isvc = standard_isvc(namespace)
        isvc["spec"]["predictor"]["timeout"] = 45  # a GitOps change elsewhere
        gitops_apply(kube, isvc)  # spec.canary is the rollout's field: the apply leaves it alone
        assert serving(cluster).canary_percent == 10
        assert cluster.get("credit_risk")["spec"]["predictor"]["timeout"] == 45
        assert kserve.reconcile() == {V1: 90, V2: 10}
    owners = {m["manager"]: m.get("fieldsV1", {}) for m in cluster.get("credit_risk")["metadata"]["managedFields"]}
    assert "f:canary" in owners["constructos-rollout"]["f:spec"]
    assert "f:canary" not in owners["constructos-gitops"]["f:spec"]


def test_knative_blue_green_is_a_zero_then_hundred_canary(live: tuple[str, Cluster]) -> None:
    namespace, cluster = live
    green = SmokeServer("2")
    try:
        with KServeStandIn(cluster.api, namespace, "credit-risk") as kserve:
            out = std(cluster, "start", "credit_risk", "--version", "2", "--strategy", "blue-green")
            assert any("is ready" in line for line in out)  # the 0% revision, waited for
            assert serving(cluster) == Serving(V2, 0, V1, 10, strategy="blue-green")
            assert settle(kserve) == {V1: 100}
            std(cluster, "switch", "credit_risk", "--smoke-url", green.url)
            assert settle(kserve) == {V2: 100}
            std(cluster, "rollback", "credit_risk")
            assert serving(cluster) == Serving(V1, None, None, 10)
            assert settle(kserve) == {V1: 100}
    finally:
        green.close()
    assert kserve.history == [{V1: 100}, {V2: 100}, {V1: 100}]


@pytest.mark.parametrize(
    ("challenger", "outcome", "splits"),
    [
        ({}, "promote", [{V1: 100}, {V2: 100}]),
        ({"error_rate": 0.05}, "rollback", [{V1: 100}, {V2: 100}, {V1: 100}]),
    ],
)
def test_blue_green_auto_is_decided_by_the_same_gates_as_a_canary(
    standard_live: tuple[str, Cluster], challenger: dict[str, Any], outcome: str, splits: list[Any]
) -> None:
    from feature_specs import load_spec
    from pipelines.rollout.canary import Evidence, Side, analyze

    namespace, cluster = standard_live
    green = SmokeServer("2")
    argv = ["auto", "credit_risk", "--namespace", namespace, "--no-aliases", "--version", "2"]
    argv += ["--strategy", "blue-green", "--interval", "0", "--failure-limit", "1", "--drain", "0"]
    args = cli.parse_args([*argv, "--smoke-url", green.url])
    champion = Side("1", 1000, error_rate=0.001, p99_s=0.010, live=0.80, labels=500)
    evidence = Evidence(champion, Side(**{**vars(champion), "version": "2", "rows": 400, **challenger}), 0.02)
    seen: list[dict[str, int]] = []
    said: list[str] = []
    try:
        with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:

            def analyse() -> Any:
                seen.append(kserve.reconcile())
                return analyze(load_spec("credit_risk"), evidence)

            assert cli.auto(args, cluster, lambda: None, said.append, analyse, lambda s: None) == outcome
            kserve.reconcile()
    finally:
        green.close()
    assert seen == [{V2: 100}]  # analysed after the switch, with all traffic on the new version
    assert any(line.startswith("smoke test passed") for line in said)
    assert kserve.history == splits
    assert serving(cluster) == Serving(V2 if outcome == "promote" else V1, mode="Standard")


def test_the_deploy_steps_canary_takes_the_same_safe_order_in_standard_mode(
    standard_live: tuple[str, Cluster],
) -> None:
    namespace, cluster = standard_live
    with StandardStandIn(cluster.api, namespace, "credit-risk") as kserve:
        out = start_canary("credit_risk", "2", 10, namespace=namespace, api=cluster.api, ready_timeout_s=20)
        lines = out.splitlines()
        assert (
            '"trafficPercent": 0' in lines[0] and "canary v2 serves" in lines[1] and '"trafficPercent": 10' in lines[2]
        )
        assert kserve.reconcile() == {V1: 90, V2: 10}
    assert kserve.history == [{V1: 100}, {V1: 90, V2: 10}]
