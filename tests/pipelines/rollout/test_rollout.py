"""pipelines.rollout.cli: pure plans and patch bodies, the Kubernetes client call against a local
HTTP endpoint, and (integration) GitOps edits rendered by kustomize with MLflow aliases
moved in a real sqlite registry."""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS, check_bundle
from pipelines.manifests.lint import lint
from pipelines.manifests.schemas import schema_findings
from pipelines.rollout import cli
from pipelines.rollout.aliases import read_aliases
from pipelines.rollout.cluster import Cluster
from pipelines.rollout.overlay import Overlay
from pipelines.rollout.patches import apply_merge_patch, container_with_uri, merge_patch, overlay_ops, with_uri
from pipelines.rollout.plan import (
    Plan,
    Step,
    canary_replicas,
    plan_pin,
    plan_promote,
    plan_rollback,
    plan_start,
    plan_step,
    plan_switch,
)
from pipelines.rollout.readiness import (
    deployment_problem,
    pod_problems,
    revision_ready,
    route_problem,
    standard_problem,
)
from pipelines.rollout.state import BLUE_GREEN, MODE_ANNOTATION, STABLE_ANNOTATION, RolloutError, Serving, uri_version

BASE_ISVCS = MANIFESTS / "base" / "platform" / "inferenceservices.yaml"


@pytest.fixture
def isvc() -> dict[str, Any]:
    """credit-risk as the base declares it, as the API server would return it."""
    doc = next(d for d in yaml.safe_load_all(BASE_ISVCS.read_text()) if d["metadata"]["name"] == "credit-risk")
    doc["metadata"] |= {"namespace": "constructos-ml", "resourceVersion": "41"}
    return doc


@pytest.fixture
def pinned(isvc: dict[str, Any]) -> dict[str, Any]:
    """credit-risk serving version 1, as every overlay pins it."""
    isvc["spec"]["predictor"]["containers"][0]["args"] = ["--model_uri=models:/credit_risk/1"]
    return isvc


def after(isvc: dict[str, Any], target: Serving) -> dict[str, Any]:
    return apply_merge_patch(isvc, merge_patch(isvc, target))


def standard(isvc: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService in Standard mode on two replicas, as the node overlay makes it."""
    isvc = copy.deepcopy(isvc)
    isvc["metadata"]["annotations"][MODE_ANNOTATION] = "Standard"
    isvc["spec"]["predictor"] |= {"minReplicas": 2, "maxReplicas": 2}
    for key in ("scaleMetric", "scaleTarget"):
        isvc["spec"]["predictor"].pop(key, None)
    return isvc


# --- plans ----------------------------------------------------------------------------------


def test_state_is_read_from_the_base_manifest(isvc: dict[str, Any]) -> None:
    assert Serving.from_isvc(isvc) == Serving("models:/credit_risk@champion", None, None, 10, "Knative")


STD = Serving("models:/m/3", mode="Standard", min_replicas=4)
"""Standard mode, serving version 3 on four replicas, no rollout."""
STD_CANARY = Serving("models:/m/3", 25, "models:/m/3", 10, "Standard", "models:/m/4", "v4", 1, min_replicas=4)
"""...and version 4 as a 25% canary."""


def test_start_pins_the_new_version_as_a_canary_and_remembers_the_stable_uri() -> None:
    current = Serving("models:/credit_risk/3", default_percent=5)
    plan = plan_start("credit_risk", current, "4")
    assert plan.steps == (Step(Serving("models:/credit_risk/4", 5, "models:/credit_risk/3", 5)),)
    assert plan.aliases == {"challenger": "4"}
    assert plan_start("credit_risk", current, "4", 25).steps[0].target.canary_percent == 25


@pytest.mark.parametrize(
    ("current", "version", "percent", "error"),
    [
        (Serving("models:/m/4", 10, "models:/m/3"), "5", None, "promote or roll back first"),
        (Serving("models:/m/3"), "3", None, "already serving"),
        (Serving("models:/m/3"), "4", 101, "outside 0-100"),
        (Serving("models:/m/3"), "4", -5, "outside 0-100"),
        (Serving("models:/m@champion"), "4", None, "moving alias; `pin` a version first"),
        (Serving("models:/m/3", mode="ModelMesh"), "4", None, "no mode reads a canary"),
        (Serving("models:/m/3", mode=None), "4", None, "set the serving.kserve.io/deploymentMode annotation"),
        (Serving("models:/m/3", mode="Standard", min_replicas=0), "4", None, "needs at least 1"),
        (Serving("models:/m/3", mode="Standard"), "4", 120, "outside 0-100"),
        (STD_CANARY, "5", None, "promote or roll back first"),
    ],
)
def test_start_refuses(current: Serving, version: str, percent: int | None, error: str) -> None:
    with pytest.raises(RolloutError, match=error):
        plan_start("m", current, version, percent)


def test_step_moves_only_the_share() -> None:
    canary = Serving("models:/m/4", 10, "models:/m/3")
    assert plan_step("m", canary, 50) == Plan((Step(Serving("models:/m/4", 50, "models:/m/3")),))
    with pytest.raises(RolloutError, match="outside 0-100"):
        plan_step("m", canary, 150)
    with pytest.raises(RolloutError, match="no canary"):
        plan_step("m", Serving("models:/m/3"), 50)


def test_promote_moves_champion_and_drops_the_canary_field() -> None:
    plan = plan_promote("m", Serving("models:/m/4", 50, "models:/m/3", 20))
    assert plan.steps == (Step(Serving("models:/m/4", None, None, 20)),)
    assert plan.aliases == {"champion": "4", "challenger": None}
    with pytest.raises(RolloutError, match="no canary"):
        plan_promote("m", Serving("models:/m/4"))
    with pytest.raises(RolloutError, match="pins no registry version"):
        plan_promote("m", Serving("models:/m@challenger", 10, "models:/m/3"))


def test_rollback_pins_zero_restores_at_zero_waits_then_drops_the_canary() -> None:
    plan = plan_rollback("m", Serving("models:/m/4", 30, "models:/m/3"))
    assert plan.steps == (
        Step(Serving("models:/m/4", 0, "models:/m/3")),
        Step(Serving("models:/m/3", 0, "models:/m/3"), wait_ready=True),
        Step(Serving("models:/m/3", None, None)),
    )
    assert plan.aliases == {"challenger": None}
    # re-run after a stop: it goes on from the state it finds
    assert plan_rollback("m", Serving("models:/m/4", 0, "models:/m/3")).steps == plan.steps[1:]
    assert plan_rollback("m", Serving("models:/m/3", 0, "models:/m/3")).steps == plan.steps[1:]
    with pytest.raises(RolloutError, match="nothing to roll back"):
        plan_rollback("m", Serving("models:/m/4"))


def test_a_canary_started_elsewhere_rolls_back_to_the_champions_version() -> None:
    plan = plan_rollback("m", Serving("models:/m/4", 30), champion="2")  # no stable URI recorded
    assert plan.steps[-1] == Step(Serving("models:/m/2", None, None))
    with pytest.raises(RolloutError, match="no pinned version to return to"):
        plan_rollback("m", Serving("models:/m/4", 30))


def test_pin_serves_exactly_one_version() -> None:
    plan = plan_pin("m", Serving("models:/m@champion"), "3")
    assert plan.steps == (Step(Serving("models:/m/3")),) and plan.aliases == {"champion": "3"}
    with pytest.raises(RolloutError, match="promote or roll back first"):
        plan_pin("m", Serving("models:/m/4", 10, "models:/m/3"), "3")


def test_a_revision_is_ready_when_the_controller_saw_the_spec_and_reports_it_ready() -> None:
    def isvc(generation: int, observed: int, created: str, ready: str | None) -> dict[str, Any]:
        predictor = {"latestCreatedRevision": created, "latestReadyRevision": ready}
        status = {"observedGeneration": observed, "components": {"predictor": predictor}}
        return {"metadata": {"generation": generation}, "status": status}

    assert revision_ready(isvc(3, 3, "p-3", "p-3"))
    assert not revision_ready(isvc(3, 3, "p-3", "p-2"))  # the new revision is not ready yet
    assert not revision_ready(isvc(4, 3, "p-3", "p-3"))  # the controller has not seen the last patch
    assert not revision_ready({"metadata": {"generation": 1}})


# --- Standard mode: spec.canary ---------------------------------------------------------------


def test_standard_start_makes_the_canary_ready_at_zero_before_it_gets_a_share() -> None:
    plan = plan_start("m", STD, "4", 25)
    dark = replace(STD, canary_uri="models:/m/4", canary_name="v4", canary_percent=0, canary_replicas=1)
    dark = replace(dark, stable_uri="models:/m/3")
    assert plan.steps == (Step(dark, wait_canary=True), Step(replace(dark, canary_percent=25)))
    assert plan.aliases == {"challenger": "4"}
    assert dark.model_uri == "models:/m/3"  # the stable predictor is not touched
    # stopped while waiting: `start` again waits on, then gives the share
    assert plan_start("m", dark, "4", 25).steps == plan.steps
    # the canary is sized for its share of the stable's replicas, at least one pod, at most all
    assert [canary_replicas(4, p, None) for p in (0, 10, 25, 50, 100)] == [1, 1, 1, 2, 4]
    assert canary_replicas(4, 0, BLUE_GREEN) == 4  # blue-green's new side is full-sized


def test_standard_step_resizes_and_waits_before_more_traffic_and_lowers_the_share_first() -> None:
    up = plan_step("m", STD_CANARY, 50)
    sized = replace(STD_CANARY, canary_replicas=2)
    assert up.steps == (Step(sized, wait_canary=True), Step(replace(sized, canary_percent=50)))
    same_size = plan_step("m", STD_CANARY, 20)
    assert same_size.steps == (Step(replace(STD_CANARY, canary_percent=20)),)
    assert plan_step("m", STD_CANARY, 0).steps == (Step(replace(STD_CANARY, canary_percent=0), drain=True),)
    with pytest.raises(RolloutError, match="switch"):
        plan_step("m", replace(STD_CANARY, strategy=BLUE_GREEN), 50)


def test_standard_promote_switches_the_stable_waits_drains_then_removes_the_canary() -> None:
    plan = plan_promote("m", STD_CANARY)
    switched = replace(STD_CANARY, model_uri="models:/m/4")
    assert plan.steps == (
        Step(switched, wait_ready=True),
        Step(replace(switched, canary_percent=0), drain=True),
        Step(Serving("models:/m/4", mode="Standard", min_replicas=4)),
    )
    assert plan.aliases == {"champion": "4", "challenger": None}
    assert plan_promote("m", switched).steps == plan.steps  # re-run after a stop: goes on
    drained = plan_promote("m", replace(switched, canary_percent=0)).steps
    assert drained[1:] == plan.steps[1:] and drained[0].wait_ready  # waits and drains again, patches less


def test_standard_rollback_takes_the_share_away_drains_then_removes() -> None:
    plan = plan_rollback("m", STD_CANARY)
    assert plan.steps == (
        Step(STD_CANARY, wait_ready=True),  # nothing to patch: the stable must be ready to take it all
        Step(replace(STD_CANARY, canary_percent=0), drain=True),
        Step(Serving("models:/m/3", mode="Standard")),
    )
    assert plan.aliases == {"challenger": None}
    # halfway through a promote (the stable already switched): restore it first, and wait
    mid = replace(STD_CANARY, model_uri="models:/m/4")
    assert plan_rollback("m", mid).steps == plan.steps
    # a canary added by hand (no annotation): the stable predictor still names the way back
    foreign = replace(STD_CANARY, stable_uri=None)
    assert plan_rollback("m", foreign).steps[-1].target.model_uri == "models:/m/3"
    with pytest.raises(RolloutError, match="no pinned version"):
        plan_rollback("m", replace(mid, stable_uri=None))


def test_blue_green_deploys_at_zero_switches_at_once_and_switches_back() -> None:
    for current in (STD, Serving("models:/m/3")):
        start = plan_start("m", current, "4", strategy=BLUE_GREEN)
        (only,) = start.steps
        assert only.target.canary_percent == 0 and only.target.strategy == BLUE_GREEN
        assert only.wait_canary if current.standard else only.wait_ready
        green = only.target
        assert green.challenger_uri == "models:/m/4"
        switch = plan_switch("m", green)
        assert switch.steps[-1] == Step(replace(green, canary_percent=100))
        assert switch.steps[0].target == green  # readiness checked again, nothing patched
        switched = switch.steps[-1].target
        back = plan_rollback("m", switched).steps
        patched = [s.target for s in back if s.target != switched]
        assert patched[0].canary_percent == 0  # the old version takes everything back first
        assert back[-1].target == replace(current, mode=current.mode)
        assert plan_promote("m", switched).steps[-1].target.model_uri == "models:/m/4"
        with pytest.raises(RolloutError, match="`switch` first"):
            plan_promote("m", green)  # no traffic before the smoke test, not even by promote
    halfway = replace(STD, model_uri="models:/m/4", canary_uri="models:/m/4", canary_name="v4", canary_percent=0)
    halfway = replace(halfway, stable_uri="models:/m/3", strategy=BLUE_GREEN)
    assert plan_promote("m", halfway).steps[-1].target == Serving("models:/m/4", mode="Standard")  # goes on
    assert STD.canary_running is False
    assert plan_start("m", STD, "4", strategy=BLUE_GREEN).steps[0].target.canary_replicas == 4
    with pytest.raises(RolloutError, match="`switch` is for blue-green"):
        plan_switch("m", STD_CANARY)
    with pytest.raises(RolloutError, match="no blue-green rollout"):
        plan_switch("m", STD)


def test_a_standard_rollout_reads_back_from_its_own_patches(pinned: dict[str, Any]) -> None:
    isvc = standard(pinned)
    current = Serving.from_isvc(isvc)
    assert current == Serving("models:/credit_risk/1", mode="Standard") and current.min_replicas == 2
    states = [s.target for s in plan_start("credit_risk", current, "4", 50).steps]
    for target in states:
        isvc = after(isvc, target)
        assert Serving.from_isvc(isvc) == target
        assert schema_findings(isvc)[0] == []  # KServe v0.20.0's CRD schema accepts it
        assert not [f for f in lint([isvc]) if f.rule.startswith("canary")]
    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 50 and entry["predictor"]["name"] == "v4"
    assert entry["predictor"]["minReplicas"] == 1
    stable, canary = isvc["spec"]["predictor"]["containers"][0], entry["predictor"]["containers"][0]
    assert stable["args"] == ["--model_uri=models:/credit_risk/1"]
    assert canary == {**stable, "args": ["--model_uri=models:/credit_risk/4"]}  # the rest is the stable's
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    for step in plan_promote("credit_risk", Serving.from_isvc(isvc)).steps:
        isvc = after(isvc, step.target)
        assert Serving.from_isvc(isvc) == step.target
    assert "canary" not in isvc["spec"]
    assert isvc["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/credit_risk/4"]
    assert STABLE_ANNOTATION not in isvc["metadata"]["annotations"]


def test_standard_patch_bodies_are_exact(pinned: dict[str, Any]) -> None:
    isvc = standard(pinned)
    dark, share = (s.target for s in plan_start("credit_risk", Serving.from_isvc(isvc), "4", 10).steps)
    body = merge_patch(isvc, dark)
    canary = {**isvc["spec"]["predictor"]["containers"][0], "args": ["--model_uri=models:/credit_risk/4"]}
    assert body == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {"constructos.io/stable-model-uri": "models:/credit_risk/1"},
        },
        "spec": {
            "canary": [{"trafficPercent": 0, "predictor": {"name": "v4", "containers": [canary], "minReplicas": 1}}]
        },
    }
    running = apply_merge_patch(isvc, body)
    assert merge_patch(running, share)["spec"]["canary"][0]["trafficPercent"] == 10
    done = plan_rollback("credit_risk", Serving.from_isvc(running)).steps[-1].target
    assert merge_patch(running, done) == {
        "metadata": {"resourceVersion": "41", "annotations": {"constructos.io/stable-model-uri": None}},
        "spec": {"canary": None},
    }


def test_a_storage_uri_environment_variable_follows_the_model_uri(pinned: dict[str, Any]) -> None:
    container = pinned["spec"]["predictor"]["containers"][0]
    container["env"] = [{"name": "STORAGE_URI", "value": "models:/credit_risk/1"}, {"name": "A", "value": "b"}]
    moved = container_with_uri(container, "models:/credit_risk/5")
    assert moved["env"] == [{"name": "STORAGE_URI", "value": "models:/credit_risk/5"}, {"name": "A", "value": "b"}]
    ops = overlay_ops(standard(pinned), Serving("models:/credit_risk/5", mode="Standard"))
    assert [op["path"] for op in ops] == ["/spec/predictor/containers/0/args", "/spec/predictor/containers/0/env"]


def test_more_than_one_canary_is_not_ours(pinned: dict[str, Any]) -> None:
    isvc = standard(pinned)
    isvc["spec"]["canary"] = [{"trafficPercent": 0, "predictor": {"name": n}} for n in ("a", "b")]
    with pytest.raises(RolloutError, match="2 canaries"):
        Serving.from_isvc(isvc)
    isvc["spec"]["canary"] = isvc["spec"]["canary"][:1]  # an entry without containers runs the stable's
    assert Serving.from_isvc(isvc).canary_uri == "models:/credit_risk/1"


# --- is it ready? -----------------------------------------------------------------------------


def deployment(uri: str, replicas: int = 2, ready: int = 2, updated: int = 2, total: int = 2) -> dict[str, Any]:
    container = {"name": "kserve-container", "args": [f"--model_uri={uri}"]}
    status = {"observedGeneration": 3, "replicas": total, "updatedReplicas": updated, "availableReplicas": ready}
    return {
        "metadata": {"generation": 3},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [container]}}},
        "status": status,
    }


def test_a_deployment_is_ready_when_rolled_out_with_the_uri_and_every_replica_available() -> None:
    uri = "models:/m/4"
    assert deployment_problem(deployment(uri), "d", uri) is None
    assert "does not exist" in str(deployment_problem(None, "d", uri))
    assert "runs models:/m/3, not yet" in str(deployment_problem(deployment("models:/m/3"), "d", uri))
    rolling = deployment_problem(deployment(uri, ready=2, updated=1, total=3), "d", uri)  # old pods still serve
    assert "2/2 replicas available, 1 updated, 3 in all" in str(rolling)
    stale = deployment(uri) | {"metadata": {"generation": 4}}
    assert "has not seen the latest spec" in str(deployment_problem(stale, "d", uri))
    failing = deployment(uri, ready=0)
    failing["status"]["conditions"] = [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no"},
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "ok"},
    ]
    text = str(deployment_problem(failing, "d", uri))
    assert "MinimumReplicasUnavailable" in text and "ReplicaSetUpdated" not in text


def test_a_standard_step_waits_for_the_side_it_changed(pinned: dict[str, Any]) -> None:
    isvc = after(standard(pinned), STD_CANARY)
    isvc["metadata"]["name"] = "m"
    deps: dict[str, dict[str, Any] | None] = {
        "m-predictor": deployment("models:/m/3"),
        "m-v4-predictor": deployment("models:/m/4", 1, 0, 1, 1),
    }

    def problem(stable: bool, canary: bool) -> str | None:
        return standard_problem(isvc, deps, STD_CANARY, stable=stable, canary=canary)

    assert problem(True, False) is None
    assert "m-v4-predictor: 0/1 replicas available" in str(problem(False, True))
    deps["m-v4-predictor"] = deployment("models:/m/4", 1, 1, 1, 1)
    assert "KServe has not reported canary v4" in str(problem(False, True))
    isvc["status"] = {"canaryStatuses": [{"name": "v4", "ready": False, "trafficPercent": 25}]}
    assert "reports canary v4 not ready" in str(problem(False, True))
    isvc["status"]["canaryStatuses"][0]["ready"] = True
    assert problem(True, True) is None


def test_pod_problems_name_the_failing_probe_or_the_waiting_reason() -> None:
    pods = [
        {
            "metadata": {"name": "p1"},
            "status": {"containerStatuses": [{"name": "c", "ready": False, "state": {"running": {}}}]},
        },
        {
            "metadata": {"name": "p2"},
            "status": {
                "containerStatuses": [
                    {
                        "name": "c",
                        "ready": False,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"reason": "Error"}},
                    }
                ]
            },
        },
    ]
    assert pod_problems(pods) == [
        "pod p1 container c: running, readiness probe failing",
        "pod p2 container c: CrashLoopBackOff (last exit: Error)",
    ]


def test_a_canary_is_drained_when_no_route_weights_it_and_the_gateway_accepted_that() -> None:
    def route(weight: int | None, accepted: int) -> dict[str, Any]:
        refs: list[dict[str, Any]] = [{"name": "m-predictor", "weight": 100}, {"name": "m-v4-predictor"}]
        if weight is None:
            refs = refs[:1]
        else:
            refs[1]["weight"] = weight
        condition = {"type": "Accepted", "status": "True", "observedGeneration": accepted}
        return {
            "metadata": {"name": "m", "generation": 2},
            "spec": {"rules": [{"backendRefs": refs}]},
            "status": {"parents": [{"conditions": [condition]}]},
        }

    assert "still sends weight 10" in str(route_problem([route(10, 2)], "m-v4-predictor"))
    assert "has not yet accepted generation 2" in str(route_problem([route(0, 1)], "m-v4-predictor"))
    assert route_problem([route(0, 2)], "m-v4-predictor") is None
    assert route_problem([route(None, 2)], "m-v4-predictor") is None  # KServe >= #5984 omits it
    silent = route(0, 2)
    del silent["status"]["parents"][0]["conditions"][0]["observedGeneration"]
    assert route_problem([silent], "m-v4-predictor") is None  # nothing to wait for


# --- smoke test -----------------------------------------------------------------------------


def test_the_smoke_request_is_in_range_and_the_answer_is_judged() -> None:
    from feature_specs import load_spec
    from pipelines.rollout.smoke import judge, smoke_request

    spec = load_spec("credit_risk")
    body = smoke_request(spec)
    assert [i["name"] for i in body["inputs"]] == spec.feature_names
    for tensor, feature in zip(body["inputs"], spec.features, strict=True):
        assert tensor["datatype"] == feature.v2_datatype and len(tensor["data"]) == 2
        value = tensor["data"][0]
        if feature.categories:
            assert value in feature.categories
        elif feature.dtype in ("float", "int"):
            assert (feature.min is None or value >= feature.min) and (feature.max is None or value <= feature.max)
    good = {
        "model_version": "4",
        "outputs": [{"name": "probability", "data": [0.1, 0.2]}, {"name": "label", "data": [False, False]}],
    }
    assert judge(spec, "4", 200, good) == []
    assert judge(spec, "5", 200, good) == ["answer is from version '4', expected '5'"]
    assert judge(spec, "4", 500, "boom") == ["infer answered 500: boom"]
    nan = {**good, "outputs": [{"name": "probability", "data": [float("nan"), 0.2]}, good["outputs"][1]]}
    assert "not finite" in judge(spec, "4", 200, nan)[0]


# --- patch bodies ---------------------------------------------------------------------------


def test_start_patch_body_is_exact(pinned: dict[str, Any]) -> None:
    target = plan_start("credit_risk", Serving.from_isvc(pinned), "4").steps[0].target
    body = merge_patch(pinned, target)
    containers = copy.deepcopy(pinned["spec"]["predictor"]["containers"])
    containers[0]["args"] = ["--model_uri=models:/credit_risk/4"]
    assert body == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {"constructos.io/stable-model-uri": "models:/credit_risk/1"},
        },
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": containers}},
    }
    assert Serving.from_isvc(apply_merge_patch(pinned, body)) == target


def test_promote_and_rollback_bodies_remove_fields_with_null(pinned: dict[str, Any]) -> None:
    canary = after(pinned, plan_start("credit_risk", Serving.from_isvc(pinned), "4").steps[0].target)
    promoted = plan_promote("credit_risk", Serving.from_isvc(canary)).steps[0].target
    body = merge_patch(canary, promoted)
    assert body == {
        "metadata": {"resourceVersion": "41", "annotations": {"constructos.io/stable-model-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    done = apply_merge_patch(canary, body)
    assert "canaryTrafficPercent" not in done["spec"]["predictor"]
    assert "constructos.io/stable-model-uri" not in done["metadata"]["annotations"]
    assert done["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/credit_risk/4"]

    pin, restore, finish = (s.target for s in plan_rollback("credit_risk", Serving.from_isvc(canary)).steps)
    assert merge_patch(canary, pin) == {
        "metadata": {"resourceVersion": "41"},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    restoring = after(after(canary, pin), restore)
    assert restoring["spec"]["predictor"]["canaryTrafficPercent"] == 0  # the restored revision gets nothing yet
    restored = after(restoring, finish)
    assert restored["spec"] == pinned["spec"]  # the previous spec, exactly
    assert "constructos.io/stable-model-uri" not in restored["metadata"]["annotations"]


def test_only_the_model_uri_argument_changes(isvc: dict[str, Any]) -> None:
    assert with_uri(["--a=1", "--model_uri=x", "--b=2"], "y") == ["--a=1", "--model_uri=y", "--b=2"]
    assert with_uri(["--a=1"], "y") == ["--a=1", "--model_uri=y"]
    moved = after(isvc, Serving("models:/credit_risk/7", 10, "models:/credit_risk/1"))
    old, new = isvc["spec"]["predictor"]["containers"][0], moved["spec"]["predictor"]["containers"][0]
    assert {k: v for k, v in new.items() if k != "args"} == {k: v for k, v in old.items() if k != "args"}


def test_apply_merge_patch_follows_rfc_7386() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert apply_merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": {"f": 1}}) == {
        "a": {"c": [3]},
        "d": 1,
        "e": {"f": 1},
    }
    assert doc == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# The Kubernetes API calls run against a real kube-apiserver: tests/pipelines/rollout/test_cluster_rollout.py.


# --- GitOps overlay edits + MLflow aliases (integration) ------------------------------------


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow registry (sqlite) with three versions of credit_risk, built once."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("registry")
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")  # not whatever registry an earlier test set
    try:
        experiment = mlflow.create_experiment("rollout", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)  # MLflow 3 files logged models under the active one
        x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        for c in (0.1, 1.0, 10.0):
            with mlflow.start_run(experiment_id=experiment):
                model = LogisticRegression(C=c).fit(x, y)
                mlflow.sklearn.log_model(model, name="model", registered_model_name="credit_risk")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return root / "mlflow.db"


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Any:
    """A private copy of the registry; champion = 1."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(registry_template, db)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.set_registered_model_alias("credit_risk", "champion", "1")
    return client


@pytest.fixture
def overlay(tmp_path: Path, kustomize: str) -> Path:
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    return tmp_path / "manifests" / "overlays" / "staging"


def gitops(command: str, overlay: Path, client: Any, *extra: str) -> list[str]:
    args = cli.parse_args([command, "credit_risk", "--offline", "--overlay", str(overlay), *extra])
    return cli.run(args, Overlay(overlay), lambda: client)


def rendered(overlay: Path) -> dict[str, Any]:
    return next(r for r in build(overlay) if r["metadata"]["name"] == "credit-risk")


def aliases(client: Any) -> dict[str, str | None]:
    return read_aliases(client, "credit_risk")


@pytest.mark.integration
def test_gitops_canary_to_promotion_moves_aliases_in_step(overlay: Path, registry: Any) -> None:
    registry.set_registered_model_alias("credit_risk", "challenger", "2")

    gitops("start", overlay, registry)  # version from the challenger alias, share from the overlay
    state = Serving.from_isvc(rendered(overlay))
    assert state == Serving("models:/credit_risk/2", 10, "models:/credit_risk/1", 10)
    assert aliases(registry) == {"champion": "1", "challenger": "2"}
    assert check_bundle(build(overlay))[0] == []  # what the rollout writes passes manifests-check

    gitops("step", overlay, registry, "--percent", "50")
    assert Serving.from_isvc(rendered(overlay)).canary_percent == 50

    gitops("promote", overlay, registry)
    promoted = rendered(overlay)
    assert Serving.from_isvc(promoted) == Serving("models:/credit_risk/2", None, None, 10)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert aliases(registry) == {"champion": "2", "challenger": None}
    assert "constructos.io/stable-model-uri" not in promoted["metadata"]["annotations"]


@pytest.mark.integration
def test_gitops_rollback_is_three_commits_and_keeps_champion(overlay: Path, registry: Any) -> None:
    gitops("start", overlay, registry, "--version", "3", "--percent", "25")
    assert aliases(registry) == {"champion": "1", "challenger": "3"}

    out = gitops("rollback", overlay, registry)
    assert any(line.startswith("one step of rollback") for line in out)
    assert Serving.from_isvc(rendered(overlay)) == Serving("models:/credit_risk/3", 0, "models:/credit_risk/1", 10)
    assert aliases(registry) == {"champion": "1", "challenger": None}

    gitops("rollback", overlay, registry)  # the previous spec, still at 0%: its revision starts
    assert Serving.from_isvc(rendered(overlay)) == Serving("models:/credit_risk/1", 0, "models:/credit_risk/1", 10)

    gitops("rollback", overlay, registry)  # once it is ready: the canary field goes
    restored = rendered(overlay)
    assert Serving.from_isvc(restored) == Serving("models:/credit_risk/1", None, None, 10)
    base = yaml.safe_load((overlay / "rollout" / "credit_risk.yaml").read_text())
    assert base == [
        {
            "op": "add",
            "path": "/spec/predictor/containers/0/args",
            "value": ["--model_uri=models:/credit_risk/1"],
        }
    ]


@pytest.mark.integration
def test_unknown_versions_and_aliases_are_refused(overlay: Path, registry: Any) -> None:
    from mlflow.exceptions import MlflowException

    before = (overlay / "rollout" / "credit_risk.yaml").read_text()
    with pytest.raises(MlflowException):
        gitops("start", overlay, registry, "--version", "9")
    with pytest.raises(RolloutError, match="no --version given and no `challenger` alias"):
        gitops("start", overlay, registry)
    assert (overlay / "rollout" / "credit_risk.yaml").read_text() == before
    assert aliases(registry) == {"champion": "1", "challenger": None}


@pytest.mark.integration
def test_cli_status_and_dry_run_offline(overlay: Path, registry: Any, capsys: pytest.CaptureFixture[str]) -> None:
    uri = registry.tracking_uri
    before = (overlay / "rollout" / "credit_risk.yaml").read_text()
    assert cli.main(["status", "credit_risk", "--overlay", str(overlay), "--tracking-uri", uri]) == 0
    status = capsys.readouterr().out
    assert "model_uri:      models:/credit_risk/1" in status and "alias champion: 1" in status
    assert cli.main(["start", "credit_risk", "--overlay", str(overlay), "--version", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "alias challenger -> 2" in printed and "value: models:/credit_risk/1" in printed
    assert (overlay / "rollout" / "credit_risk.yaml").read_text() == before
    assert cli.main(["promote", "credit_risk", "--overlay", str(overlay), "--tracking-uri", uri]) == 2
    assert "no canary is running" in capsys.readouterr().err


STANDARD_PATCH = """\
- op: replace
  path: /metadata/annotations/serving.kserve.io~1deploymentMode
  value: Standard
- op: add
  path: /spec/predictor/minReplicas
  value: 2
- op: remove
  path: /spec/predictor/scaleMetric
- op: remove
  path: /spec/predictor/scaleTarget
"""


@pytest.fixture
def standard_overlay(overlay: Path) -> Path:
    """staging's copy in Standard mode on two replicas (what the node overlay does to the base)."""
    (overlay / "standard.yaml").write_text(STANDARD_PATCH)
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["patches"].append({"path": "standard.yaml", "target": {"kind": "InferenceService"}})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


@pytest.mark.integration
def test_gitops_standard_canary_is_one_commit_per_safe_step(standard_overlay: Path, registry: Any) -> None:
    overlay = standard_overlay
    out = gitops("start", overlay, registry, "--version", "2", "--percent", "25")
    assert "one step of start: apply this, then run `start` again" in out
    assert "once the cluster reports the canary ready, commit and run the command again" in out
    dark = Serving.from_isvc(rendered(overlay))
    assert (dark.model_uri, dark.canary_uri, dark.canary_percent, dark.canary_replicas) == (
        "models:/credit_risk/1",
        "models:/credit_risk/2",
        0,
        1,
    )
    assert check_bundle(build(overlay))[0] == []  # schema (KServe v0.20.0) and lint accept spec.canary
    assert aliases(registry) == {"champion": "1", "challenger": "2"}

    gitops("start", overlay, registry, "--version", "2", "--percent", "25")  # once ready: the share
    assert Serving.from_isvc(rendered(overlay)).canary_percent == 25

    gitops("promote", overlay, registry)  # 1: the stable predictor takes the new version
    switched = Serving.from_isvc(rendered(overlay))
    assert (switched.model_uri, switched.canary_percent) == ("models:/credit_risk/2", 25)
    gitops("promote", overlay, registry)  # 2: the canary's share to 0 (drains)
    assert Serving.from_isvc(rendered(overlay)).canary_percent == 0
    gitops("promote", overlay, registry)  # 3: the entry goes
    done = rendered(overlay)
    assert "canary" not in done["spec"]
    assert Serving.from_isvc(done) == Serving("models:/credit_risk/2", mode="Standard")
    assert aliases(registry) == {"champion": "2", "challenger": None}
    ops = yaml.safe_load((overlay / "rollout" / "credit_risk.yaml").read_text())
    assert ops == [
        {"op": "add", "path": "/spec/predictor/containers/0/args", "value": ["--model_uri=models:/credit_risk/2"]}
    ]


class Recorder:
    """An in-memory target that records what the commands do, in order (patch, wait, drain)."""

    def __init__(self, isvc: dict[str, Any]) -> None:
        self.isvc = isvc
        self.calls: list[str] = []

    def get(self, model: str) -> dict[str, Any]:
        return copy.deepcopy(self.isvc)

    def describe(self, model: str, isvc: dict[str, Any], target: Serving) -> str:
        return f"patch {merge_patch(isvc, target)}"

    def apply(self, model: str, isvc: dict[str, Any], target: Serving) -> str:
        self.isvc = after(isvc, target)
        share = "-" if target.canary_uri is None else target.canary_percent
        self.calls.append(f"patch stable={uri_version(target.model_uri)} canary={share}")
        return self.calls[-1]

    def wait(self, model: str, step: Step, timeout_s: float) -> list[str]:
        self.calls += ["wait stable"] if step.wait_ready else []
        self.calls += ["wait canary"] if step.wait_canary else []
        return []

    def drain(self, model: str, step: Step, drain_s: float, timeout_s: float) -> list[str]:
        self.calls += ["drain"] if step.drain else []
        return []

    def smoke_url(self, model: str) -> str:
        return "http://new-version"


def test_each_standard_command_patches_waits_and_drains_in_its_safe_order(pinned: dict[str, Any]) -> None:
    where = Recorder(standard(pinned))

    def run(*argv: str, **kw: Any) -> list[str]:
        where.calls = []
        args = cli.parse_args([argv[0], "credit_risk", "--no-aliases", *argv[1:]])
        cli.run(args, where, lambda: None, kw.get("check"))
        return where.calls

    assert run("start", "--version", "4", "--percent", "10") == [
        "patch stable=1 canary=0",
        "wait canary",
        "patch stable=1 canary=10",
    ]
    assert run("step", "--percent", "50") == ["wait canary", "patch stable=1 canary=50"]
    assert run("promote") == [
        "patch stable=4 canary=50",
        "wait stable",
        "patch stable=4 canary=0",
        "drain",
        "patch stable=4 canary=-",
    ]
    assert run("start", "--version", "5", "--strategy", "blue-green") == ["patch stable=4 canary=0", "wait canary"]
    smoked: list[str] = []
    ok = lambda url, spec, version: smoked.append(f"{url} v{version}") or []  # noqa: E731
    assert run("switch", check=ok) == ["wait canary", "patch stable=4 canary=100"]
    assert smoked == ["http://new-version v5"]
    assert run("rollback") == ["wait stable", "patch stable=4 canary=0", "drain", "patch stable=4 canary=-"]
    where.calls = []
    dry = cli.run(
        cli.parse_args(["start", "credit_risk", "--no-aliases", "--version", "6", "--dry-run"]), where, lambda: None
    )
    assert dry[1] == "wait until canary v6's Deployment serves models:/credit_risk/6, ready" and where.calls == []


def test_a_drain_waits_for_the_routes_then_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cluster.drain against a stub API: weight on the canary until the third listing."""

    def route(weight: int) -> dict[str, Any]:
        refs = [
            {"name": "credit-risk-predictor", "weight": 100 - weight},
            {"name": "credit-risk-v4-predictor", "weight": weight},
        ]
        return {"metadata": {"name": "credit-risk", "generation": 1}, "spec": {"rules": [{"backendRefs": refs}]}}

    class Api:
        answers = [route(10), route(10), route(0)]

        def list_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
            return {"items": [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]}

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    cluster = Cluster("ns", Api())
    step = Step(replace(STD_CANARY, canary_percent=0, canary_name="v4"), drain=True)
    out = cluster.drain("credit_risk", step, drain_s=3, timeout_s=60)
    assert out == [
        "HTTPRoutes credit-risk: no weight on credit-risk-v4-predictor",
        "drained credit-risk-v4-predictor for 3s",
    ]
    assert slept == [0.5, 0.5, 3]
    Api.answers = [route(10)]
    with pytest.raises(RolloutError, match=r"HTTPRoute credit-risk still sends weight 10 .* after 0s"):
        cluster.drain("credit_risk", step, drain_s=3, timeout_s=0)
    assert cluster.drain("credit_risk", replace(step, drain=False), 3, 60) == []
