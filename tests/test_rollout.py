"""pipelines.rollout.cli: pure plans and patch bodies, the Kubernetes client call against a local
HTTP endpoint, and (integration) GitOps edits rendered by kustomize with MLflow aliases
moved in a real sqlite registry."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.manifests import check as mc
from pipelines.rollout import cli, targets
from pipelines.rollout import plan as ro
from pipelines.rollout.aliases import read_aliases

BASE_ISVCS = mc.MANIFESTS / "base" / "platform" / "inferenceservices.yaml"


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


def after(isvc: dict[str, Any], target: ro.Serving) -> dict[str, Any]:
    return ro.apply_merge_patch(isvc, ro.merge_patch(isvc, target))


# --- plans ----------------------------------------------------------------------------------


def test_state_is_read_from_the_base_manifest(isvc: dict[str, Any]) -> None:
    assert ro.Serving.from_isvc(isvc) == ro.Serving("models:/credit_risk@champion", None, None, 10, "Knative")


def test_start_pins_the_new_version_as_a_canary_and_remembers_the_stable_uri() -> None:
    current = ro.Serving("models:/credit_risk/3", default_percent=5)
    plan = ro.plan_start("credit_risk", current, "4")
    assert plan.steps == (ro.Step(ro.Serving("models:/credit_risk/4", 5, "models:/credit_risk/3", 5)),)
    assert plan.aliases == {"challenger": "4"}
    assert ro.plan_start("credit_risk", current, "4", 25).steps[0].target.canary_percent == 25


@pytest.mark.parametrize(
    ("current", "version", "percent", "error"),
    [
        (ro.Serving("models:/m/4", 10, "models:/m/3"), "5", None, "promote or roll back first"),
        (ro.Serving("models:/m/3"), "3", None, "already serving"),
        (ro.Serving("models:/m/3"), "4", 101, "outside 0-100"),
        (ro.Serving("models:/m/3"), "4", -5, "outside 0-100"),
        (ro.Serving("models:/m@champion"), "4", None, "moving alias; `pin` a version first"),
        (ro.Serving("models:/m/3", mode="Standard"), "4", None, "ignores canaryTrafficPercent"),
        (ro.Serving("models:/m/3", mode=None), "4", None, "ignores canaryTrafficPercent"),
    ],
)
def test_start_refuses(current: ro.Serving, version: str, percent: int | None, error: str) -> None:
    with pytest.raises(ro.RolloutError, match=error):
        ro.plan_start("m", current, version, percent)


def test_step_moves_only_the_share() -> None:
    canary = ro.Serving("models:/m/4", 10, "models:/m/3")
    assert ro.plan_step("m", canary, 50) == ro.Plan((ro.Step(ro.Serving("models:/m/4", 50, "models:/m/3")),))
    with pytest.raises(ro.RolloutError, match="outside 0-100"):
        ro.plan_step("m", canary, 150)
    with pytest.raises(ro.RolloutError, match="no canary"):
        ro.plan_step("m", ro.Serving("models:/m/3"), 50)


def test_promote_moves_champion_and_drops_the_canary_field() -> None:
    plan = ro.plan_promote("m", ro.Serving("models:/m/4", 50, "models:/m/3", 20))
    assert plan.steps == (ro.Step(ro.Serving("models:/m/4", None, None, 20)),)
    assert plan.aliases == {"champion": "4", "challenger": None}
    with pytest.raises(ro.RolloutError, match="no canary"):
        ro.plan_promote("m", ro.Serving("models:/m/4"))
    with pytest.raises(ro.RolloutError, match="pins no registry version"):
        ro.plan_promote("m", ro.Serving("models:/m@challenger", 10, "models:/m/3"))


def test_rollback_pins_zero_restores_at_zero_waits_then_drops_the_canary() -> None:
    plan = ro.plan_rollback("m", ro.Serving("models:/m/4", 30, "models:/m/3"))
    assert plan.steps == (
        ro.Step(ro.Serving("models:/m/4", 0, "models:/m/3")),
        ro.Step(ro.Serving("models:/m/3", 0, "models:/m/3"), wait_ready=True),
        ro.Step(ro.Serving("models:/m/3", None, None)),
    )
    assert plan.aliases == {"challenger": None}
    # re-run after a stop: it goes on from the state it finds
    assert ro.plan_rollback("m", ro.Serving("models:/m/4", 0, "models:/m/3")).steps == plan.steps[1:]
    assert ro.plan_rollback("m", ro.Serving("models:/m/3", 0, "models:/m/3")).steps == plan.steps[1:]
    with pytest.raises(ro.RolloutError, match="nothing to roll back"):
        ro.plan_rollback("m", ro.Serving("models:/m/4"))


def test_a_canary_started_elsewhere_rolls_back_to_the_champions_version() -> None:
    plan = ro.plan_rollback("m", ro.Serving("models:/m/4", 30), champion="2")  # no stable URI recorded
    assert plan.steps[-1] == ro.Step(ro.Serving("models:/m/2", None, None))
    with pytest.raises(ro.RolloutError, match="no pinned version to return to"):
        ro.plan_rollback("m", ro.Serving("models:/m/4", 30))


def test_pin_serves_exactly_one_version() -> None:
    plan = ro.plan_pin("m", ro.Serving("models:/m@champion"), "3")
    assert plan.steps == (ro.Step(ro.Serving("models:/m/3")),) and plan.aliases == {"champion": "3"}
    with pytest.raises(ro.RolloutError, match="promote or roll back first"):
        ro.plan_pin("m", ro.Serving("models:/m/4", 10, "models:/m/3"), "3")


def test_a_revision_is_ready_when_the_controller_saw_the_spec_and_reports_it_ready() -> None:
    def isvc(generation: int, observed: int, created: str, ready: str | None) -> dict[str, Any]:
        predictor = {"latestCreatedRevision": created, "latestReadyRevision": ready}
        status = {"observedGeneration": observed, "components": {"predictor": predictor}}
        return {"metadata": {"generation": generation}, "status": status}

    assert ro.revision_ready(isvc(3, 3, "p-3", "p-3"))
    assert not ro.revision_ready(isvc(3, 3, "p-3", "p-2"))  # the new revision is not ready yet
    assert not ro.revision_ready(isvc(4, 3, "p-3", "p-3"))  # the controller has not seen the last patch
    assert not ro.revision_ready({"metadata": {"generation": 1}})


# --- patch bodies ---------------------------------------------------------------------------


def test_start_patch_body_is_exact(pinned: dict[str, Any]) -> None:
    target = ro.plan_start("credit_risk", ro.Serving.from_isvc(pinned), "4").steps[0].target
    body = ro.merge_patch(pinned, target)
    containers = copy.deepcopy(pinned["spec"]["predictor"]["containers"])
    containers[0]["args"] = ["--model_uri=models:/credit_risk/4"]
    assert body == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {"constructos.io/stable-model-uri": "models:/credit_risk/1"},
        },
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": containers}},
    }
    assert ro.Serving.from_isvc(ro.apply_merge_patch(pinned, body)) == target


def test_promote_and_rollback_bodies_remove_fields_with_null(pinned: dict[str, Any]) -> None:
    canary = after(pinned, ro.plan_start("credit_risk", ro.Serving.from_isvc(pinned), "4").steps[0].target)
    promoted = ro.plan_promote("credit_risk", ro.Serving.from_isvc(canary)).steps[0].target
    body = ro.merge_patch(canary, promoted)
    assert body == {
        "metadata": {"resourceVersion": "41", "annotations": {"constructos.io/stable-model-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    done = ro.apply_merge_patch(canary, body)
    assert "canaryTrafficPercent" not in done["spec"]["predictor"]
    assert "constructos.io/stable-model-uri" not in done["metadata"]["annotations"]
    assert done["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/credit_risk/4"]

    pin, restore, finish = (s.target for s in ro.plan_rollback("credit_risk", ro.Serving.from_isvc(canary)).steps)
    assert ro.merge_patch(canary, pin) == {
        "metadata": {"resourceVersion": "41"},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    restoring = after(after(canary, pin), restore)
    assert restoring["spec"]["predictor"]["canaryTrafficPercent"] == 0  # the restored revision gets nothing yet
    restored = after(restoring, finish)
    assert restored["spec"] == pinned["spec"]  # the previous spec, exactly
    assert "constructos.io/stable-model-uri" not in restored["metadata"]["annotations"]


def test_only_the_model_uri_argument_changes(isvc: dict[str, Any]) -> None:
    assert ro.with_uri(["--a=1", "--model_uri=x", "--b=2"], "y") == ["--a=1", "--model_uri=y", "--b=2"]
    assert ro.with_uri(["--a=1"], "y") == ["--a=1", "--model_uri=y"]
    moved = after(isvc, ro.Serving("models:/credit_risk/7", 10, "models:/credit_risk/1"))
    old, new = isvc["spec"]["predictor"]["containers"][0], moved["spec"]["predictor"]["containers"][0]
    assert {k: v for k, v in new.items() if k != "args"} == {k: v for k, v in old.items() if k != "args"}


def test_apply_merge_patch_follows_rfc_7386() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert ro.apply_merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": {"f": 1}}) == {
        "a": {"c": [3]},
        "d": 1,
        "e": {"f": 1},
    }
    assert doc == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# The Kubernetes API calls run against a real kube-apiserver: tests/test_cluster_rollout.py.


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
    shutil.copytree(mc.MANIFESTS, tmp_path / "manifests")
    return tmp_path / "manifests" / "overlays" / "staging"


def gitops(command: str, overlay: Path, client: Any, *extra: str) -> list[str]:
    args = cli.parse_args([command, "credit_risk", "--offline", "--overlay", str(overlay), *extra])
    return cli.run(args, targets.Overlay(overlay), lambda: client)


def rendered(overlay: Path) -> dict[str, Any]:
    return next(r for r in mc.build(overlay) if r["metadata"]["name"] == "credit-risk")


def aliases(client: Any) -> dict[str, str | None]:
    return read_aliases(client, "credit_risk")


@pytest.mark.integration
def test_gitops_canary_to_promotion_moves_aliases_in_step(overlay: Path, registry: Any) -> None:
    registry.set_registered_model_alias("credit_risk", "challenger", "2")

    gitops("start", overlay, registry)  # version from the challenger alias, share from the overlay
    state = ro.Serving.from_isvc(rendered(overlay))
    assert state == ro.Serving("models:/credit_risk/2", 10, "models:/credit_risk/1", 10)
    assert aliases(registry) == {"champion": "1", "challenger": "2"}
    assert mc.check(mc.build(overlay))[0] == []  # what the rollout writes passes manifests-check

    gitops("step", overlay, registry, "--percent", "50")
    assert ro.Serving.from_isvc(rendered(overlay)).canary_percent == 50

    gitops("promote", overlay, registry)
    promoted = rendered(overlay)
    assert ro.Serving.from_isvc(promoted) == ro.Serving("models:/credit_risk/2", None, None, 10)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert aliases(registry) == {"champion": "2", "challenger": None}
    assert "constructos.io/stable-model-uri" not in promoted["metadata"]["annotations"]


@pytest.mark.integration
def test_gitops_rollback_is_three_commits_and_keeps_champion(overlay: Path, registry: Any) -> None:
    gitops("start", overlay, registry, "--version", "3", "--percent", "25")
    assert aliases(registry) == {"champion": "1", "challenger": "3"}

    out = gitops("rollback", overlay, registry)
    assert any(line.startswith("one step of rollback") for line in out)
    assert ro.Serving.from_isvc(rendered(overlay)) == ro.Serving(
        "models:/credit_risk/3", 0, "models:/credit_risk/1", 10
    )
    assert aliases(registry) == {"champion": "1", "challenger": None}

    gitops("rollback", overlay, registry)  # the previous spec, still at 0%: its revision starts
    assert ro.Serving.from_isvc(rendered(overlay)) == ro.Serving(
        "models:/credit_risk/1", 0, "models:/credit_risk/1", 10
    )

    gitops("rollback", overlay, registry)  # once it is ready: the canary field goes
    restored = rendered(overlay)
    assert ro.Serving.from_isvc(restored) == ro.Serving("models:/credit_risk/1", None, None, 10)
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
    with pytest.raises(ro.RolloutError, match="no --version given and no `challenger` alias"):
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
