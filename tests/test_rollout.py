"""pipelines.rollout.cli: pure plans and patch bodies, the Kubernetes client call against a local
HTTP endpoint, and (integration) GitOps edits rendered by kustomize with MLflow aliases
moved in a real sqlite registry."""

from __future__ import annotations

import copy
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def after(isvc: dict[str, Any], target: ro.Serving) -> dict[str, Any]:
    return ro.apply_merge_patch(isvc, ro.merge_patch(isvc, target))


# --- plans ----------------------------------------------------------------------------------


def test_state_is_read_from_the_base_manifest(isvc: dict[str, Any]) -> None:
    assert ro.Serving.from_isvc(isvc) == ro.Serving("models:/credit_risk@champion", None, None, 10)


def test_start_pins_the_new_version_as_a_canary_and_remembers_the_stable_uri() -> None:
    current = ro.Serving("models:/credit_risk/3", default_percent=5)
    plan = ro.plan_start("credit_risk", current, "4")
    assert plan.steps == (ro.Serving("models:/credit_risk/4", 5, "models:/credit_risk/3", 5),)
    assert plan.aliases == {"challenger": "4"}
    assert ro.plan_start("credit_risk", current, "4", 25).steps[0].canary_percent == 25


@pytest.mark.parametrize(
    ("current", "version", "percent", "error"),
    [
        (ro.Serving("models:/m/4", 10, "models:/m/3"), "5", None, "promote or roll back first"),
        (ro.Serving("models:/m/3"), "3", None, "already serving"),
        (ro.Serving("models:/m/3"), "4", 101, "outside 0-100"),
        (ro.Serving("models:/m/3"), "4", -5, "outside 0-100"),
    ],
)
def test_start_refuses(current: ro.Serving, version: str, percent: int | None, error: str) -> None:
    with pytest.raises(ro.RolloutError, match=error):
        ro.plan_start("m", current, version, percent)


def test_step_moves_only_the_share() -> None:
    canary = ro.Serving("models:/m/4", 10, "models:/m/3")
    assert ro.plan_step("m", canary, 50) == ro.Plan((ro.Serving("models:/m/4", 50, "models:/m/3"),))
    with pytest.raises(ro.RolloutError, match="outside 0-100"):
        ro.plan_step("m", canary, 150)
    with pytest.raises(ro.RolloutError, match="no canary"):
        ro.plan_step("m", ro.Serving("models:/m/3"), 50)


def test_promote_moves_champion_and_drops_the_canary_field() -> None:
    plan = ro.plan_promote("m", ro.Serving("models:/m/4", 50, "models:/m/3", 20))
    assert plan.steps == (ro.Serving("models:/m/4", None, None, 20),)
    assert plan.aliases == {"champion": "4", "challenger": None}
    with pytest.raises(ro.RolloutError, match="no canary"):
        ro.plan_promote("m", ro.Serving("models:/m/4"))
    with pytest.raises(ro.RolloutError, match="pins no registry version"):
        ro.plan_promote("m", ro.Serving("models:/m@challenger", 10, "models:/m/3"))


def test_rollback_pins_the_canary_to_zero_then_restores_the_previous_spec() -> None:
    plan = ro.plan_rollback("m", ro.Serving("models:/m/4", 30, "models:/m@champion"))
    assert plan.steps == (
        ro.Serving("models:/m/4", 0, "models:/m@champion"),
        ro.Serving("models:/m@champion", None, None),
    )
    assert plan.aliases == {"challenger": None}
    pinned = ro.plan_rollback("m", ro.Serving("models:/m/4", 0, "models:/m@champion"))
    assert pinned.steps == (ro.Serving("models:/m@champion", None, None),)
    with pytest.raises(ro.RolloutError, match="nothing to roll back"):
        ro.plan_rollback("m", ro.Serving("models:/m/4"))


def test_a_canary_started_elsewhere_rolls_back_to_the_champion() -> None:
    plan = ro.plan_rollback("m", ro.Serving("models:/m/4", 30))  # no stable URI recorded
    assert plan.steps[-1] == ro.Serving("models:/m@champion", None, None)


# --- patch bodies ---------------------------------------------------------------------------


def test_start_patch_body_is_exact(isvc: dict[str, Any]) -> None:
    target = ro.plan_start("credit_risk", ro.Serving.from_isvc(isvc), "4").steps[0]
    body = ro.merge_patch(isvc, target)
    containers = copy.deepcopy(isvc["spec"]["predictor"]["containers"])
    containers[0]["args"] = ["--model_uri=models:/credit_risk/4"]
    assert body == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {"constructos.io/stable-model-uri": "models:/credit_risk@champion"},
        },
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": containers}},
    }
    assert ro.Serving.from_isvc(ro.apply_merge_patch(isvc, body)) == target


def test_promote_and_rollback_bodies_remove_fields_with_null(isvc: dict[str, Any]) -> None:
    canary = after(isvc, ro.plan_start("credit_risk", ro.Serving.from_isvc(isvc), "4").steps[0])
    promoted = ro.plan_promote("credit_risk", ro.Serving.from_isvc(canary)).steps[0]
    body = ro.merge_patch(canary, promoted)
    assert body == {
        "metadata": {"resourceVersion": "41", "annotations": {"constructos.io/stable-model-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    done = ro.apply_merge_patch(canary, body)
    assert "canaryTrafficPercent" not in done["spec"]["predictor"]
    assert "constructos.io/stable-model-uri" not in done["metadata"]["annotations"]
    assert done["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/credit_risk/4"]

    pin, restore = ro.plan_rollback("credit_risk", ro.Serving.from_isvc(canary)).steps
    assert ro.merge_patch(canary, pin) == {
        "metadata": {"resourceVersion": "41"},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    restored = after(after(canary, pin), restore)
    assert restored["spec"] == isvc["spec"]  # the previous spec, exactly
    assert "constructos.io/stable-model-uri" not in restored["metadata"]["annotations"]


def test_only_the_model_uri_argument_changes(isvc: dict[str, Any]) -> None:
    assert ro.with_uri(["--a=1", "--model_uri=x", "--b=2"], "y") == ["--a=1", "--model_uri=y", "--b=2"]
    assert ro.with_uri(["--a=1"], "y") == ["--a=1", "--model_uri=y"]
    moved = after(isvc, ro.Serving("models:/credit_risk/7", 10, "models:/credit_risk@champion"))
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


# --- the Kubernetes API call, against a local HTTP endpoint ---------------------------------


class FakeApiServer(BaseHTTPRequestHandler):
    """Just enough of the API server: GET and merge-PATCH of one InferenceService."""

    objects: dict[str, dict[str, Any]] = {}
    patches: list[tuple[str, str, dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        obj = self.objects.get(self.path)
        self._send(200, obj) if obj else self._send(404, {"kind": "Status", "code": 404})

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.patches.append((self.path, self.headers["Content-Type"], body))
        current = self.objects[self.path]
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            self._send(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
            return
        updated = ro.apply_merge_patch(current, body)
        updated["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.objects[self.path] = updated
        self._send(200, updated)


@pytest.fixture
def api_server(isvc: dict[str, Any]) -> Iterator[tuple[Any, type[FakeApiServer]]]:
    from kubernetes import client

    FakeApiServer.objects = {
        "/apis/serving.kserve.io/v1beta1/namespaces/constructos-ml/inferenceservices/credit-risk": isvc
    }
    FakeApiServer.patches = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    try:
        yield client.CustomObjectsApi(client.ApiClient(config)), FakeApiServer
    finally:
        server.shutdown()
        server.server_close()


def no_mlflow() -> Any:
    raise AssertionError("MLflow must not be touched")


def test_cluster_rollout_sends_merge_patches_through_the_kubernetes_client(api_server: Any) -> None:
    api, fake = api_server
    cluster = targets.Cluster("constructos-ml", api)
    path = "/apis/serving.kserve.io/v1beta1/namespaces/constructos-ml/inferenceservices/credit-risk"

    start = cli.parse_args(["start", "credit_risk", "--version", "4", "--percent", "20", "--no-aliases"])
    out = cli.run(start, cluster, no_mlflow)
    assert fake.patches[0][:2] == (path, "application/merge-patch+json")
    assert json.loads(out[0].split(": ", 1)[1]) == fake.patches[0][2]
    assert fake.objects[path]["spec"]["predictor"]["canaryTrafficPercent"] == 20

    cli.run(cli.parse_args(["rollback", "credit_risk", "--no-aliases"]), cluster, no_mlflow)
    pin, restore = (p[2] for p in fake.patches[1:])
    assert pin["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    assert pin["metadata"]["resourceVersion"] == "42" and restore["metadata"]["resourceVersion"] == "43"
    final = fake.objects[path]
    assert "canaryTrafficPercent" not in final["spec"]["predictor"]
    assert final["spec"]["predictor"]["containers"][0]["args"] == ["--model_uri=models:/credit_risk@champion"]


def test_start_canary_for_the_deploy_step_patches_only_the_rollout_fields(api_server: Any) -> None:
    api, fake = api_server
    before = copy.deepcopy(next(iter(fake.objects.values())))
    targets.start_canary("credit_risk", "5", 15, api=api)
    ((_, _, body),) = fake.patches
    after_patch = next(iter(fake.objects.values()))
    assert ro.Serving.from_isvc(after_patch) == ro.Serving("models:/credit_risk/5", 15, "models:/credit_risk@champion")
    for key in ("minReplicas", "maxReplicas", "logger", "volumes"):
        assert after_patch["spec"]["predictor"][key] == before["spec"]["predictor"][key]
    assert set(body["spec"]["predictor"]) == {"canaryTrafficPercent", "containers"}


def test_dry_run_prints_the_patches_and_changes_nothing(api_server: Any) -> None:
    api, fake = api_server
    before = copy.deepcopy(fake.objects)
    out = cli.run(
        cli.parse_args(["start", "credit_risk", "--version", "4", "--dry-run"]),
        targets.Cluster("constructos-ml", api),
        no_mlflow,
    )
    assert out[0] == "alias challenger -> 4"
    body = json.loads(out[1].split(": ", 1)[1])
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert fake.patches == [] and fake.objects == before


def test_a_concurrent_change_is_a_conflict_not_an_overwrite(api_server: Any, isvc: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    api, fake = api_server
    stale = copy.deepcopy(isvc)
    next(iter(fake.objects.values()))["metadata"]["resourceVersion"] = "99"  # someone else wrote
    with pytest.raises(ApiException) as raised:
        targets.Cluster("constructos-ml", api).apply("credit_risk", stale, ro.Serving("models:/credit_risk/4", 10, "x"))
    assert raised.value.status == 409


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
    assert state == ro.Serving("models:/credit_risk/2", 10, "models:/credit_risk@champion", 10)
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
def test_gitops_rollback_is_two_commits_and_keeps_champion(overlay: Path, registry: Any) -> None:
    gitops("start", overlay, registry, "--version", "3", "--percent", "25")
    assert aliases(registry) == {"champion": "1", "challenger": "3"}

    out = gitops("rollback", overlay, registry)
    assert out[0].startswith("step 1 of 2")
    assert ro.Serving.from_isvc(rendered(overlay)) == ro.Serving(
        "models:/credit_risk/3", 0, "models:/credit_risk@champion", 10
    )
    assert aliases(registry) == {"champion": "1", "challenger": None}

    gitops("rollback", overlay, registry)
    restored = rendered(overlay)
    assert ro.Serving.from_isvc(restored) == ro.Serving("models:/credit_risk@champion", None, None, 10)
    base = yaml.safe_load((overlay / "rollout" / "credit_risk.yaml").read_text())
    assert base == [
        {
            "op": "add",
            "path": "/spec/predictor/containers/0/args",
            "value": ["--model_uri=models:/credit_risk@champion"],
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
    assert "model_uri:      models:/credit_risk@champion" in status and "alias champion: 1" in status
    assert cli.main(["start", "credit_risk", "--overlay", str(overlay), "--version", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "alias challenger -> 2" in printed and "value: models:/credit_risk@champion" in printed
    assert (overlay / "rollout" / "credit_risk.yaml").read_text() == before
    assert cli.main(["promote", "credit_risk", "--overlay", str(overlay), "--tracking-uri", uri]) == 2
    assert "no canary is running" in capsys.readouterr().err
