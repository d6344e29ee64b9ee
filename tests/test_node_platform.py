"""The whole platform on a real node (``make node-up``, ``make node-image``, ``make deploy ENV=node``):
pods from the platform image, InferenceServices reconciled by KServe's own controller in Standard
mode, the broker and the stores outside the node reached through ExternalName Services.

The loop runs as users run it: events published to the broker on the host are landed by the trigger
pod into S3 and start a training (kfp.local in the trigger's pod), which registers each model's first
version in the node's MLflow; the predictors, NotReady until then, load it and turn Ready. Then V2
REST, V2 gRPC (tritonclient) and the query-string call through each InferenceService's Service answer
exactly what ``make serve`` on the host answers for the same version and rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from feature_specs import load_spec, spec_names
from pipelines.manifests.render import k8s_name
from tests.helpers import free_port, v2_body, wait_ready
from tests.kube_node import NAMESPACE, ROOT, Node

pytestmark = [pytest.mark.integration, pytest.mark.node]

MODELS = spec_names()
TRAIN_TIMEOUT = float(os.environ.get("CONSTRUCTOS_NODE_TRAIN_TIMEOUT", "1500"))


def isvc_ready(node: Node, name: str) -> bool:
    conditions = node.get("inferenceservice", name, "-n", NAMESPACE).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def registered_versions(tracking_uri: str, model: str) -> list[int]:
    from mlflow import MlflowClient

    # the registry named too: an earlier test in this process may have left mlflow's default set
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{model}'"))


@pytest.fixture(scope="module")
def mlflow_uri(platform: Node) -> Iterator[str]:
    """The node's MLflow server, from the host (its --allowed-hosts admits localhost)."""
    with platform.port_forward("svc/mlflow", 5000) as port:
        yield f"http://localhost:{port}"


@pytest.fixture(scope="module")
def trained(platform: Node, mlflow_uri: str) -> dict[str, int]:
    """Every model has a registered version on the node and its InferenceService is Ready: what the
    trigger pod trained from events published on the host (published here when none is registered)."""
    versions = {m: registered_versions(mlflow_uri, m) for m in MODELS}
    for model in [m for m, found in versions.items() if not found]:
        # as many rows as the demo trains on: at the retrain threshold alone a gate may fairly refuse
        rows = max(load_spec(model).retrain.min_new_rows, 20_000)
        subprocess.run(
            [sys.executable, "-m", "pipelines.streaming.publish", model, "--rows", str(rows)],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
    platform.wait_until(
        "every model registered by the trigger's training",
        lambda: all(registered_versions(mlflow_uri, m) for m in MODELS),
        TRAIN_TIMEOUT,
        every=10,
    )
    for model in MODELS:
        platform.wait_until(
            f"InferenceService {k8s_name(model)} Ready", partial(isvc_ready, platform, k8s_name(model)), 300
        )
    return {m: registered_versions(mlflow_uri, m)[0] for m in MODELS}


def test_every_pod_of_the_platform_is_running_and_ready(platform: Node, trained: dict[str, int]) -> None:
    pods = platform.get("pods", "-n", NAMESPACE)["items"]
    owners = Counter(p["metadata"]["labels"].get("app.kubernetes.io/name") or "?" for p in pods)
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", f"{name} is {pod['status']['phase']}"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready.get("Ready") == "True", f"{name} is not Ready: {pod['status']}"
    for workload in ("mlflow", "monitoring", "trigger"):
        assert owners[workload] >= 1, f"no {workload} pod: {owners}"
    predictors = [p for p in pods if "serving.kserve.io/inferenceservice" in p["metadata"]["labels"]]
    assert {p["metadata"]["labels"]["serving.kserve.io/inferenceservice"] for p in predictors} == {
        k8s_name(m) for m in MODELS
    }
    # two replicas of each predictor; payloads are logged to Kafka by the predictor (no agent sidecar)
    assert len(predictors) == 2 * len(MODELS)
    for pod in predictors:
        assert [c["name"] for c in pod["spec"]["containers"]] == ["kserve-container"]


@pytest.fixture(scope="module")
def host_server(
    mlflow_uri: str, trained: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """``make serve`` on the host: every model, the version each node predictor serves, from the
    node's MLflow."""
    http, grpc = free_port(), free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_REGISTRY_URI": mlflow_uri,
        "CONSTRUCTOS_DATA_DIR": str(tmp_path_factory.mktemp("host-serve")),
        "CONSTRUCTOS_MODEL_URI_TEMPLATE": "models:/{model}/1",
        # the server offers presigned S3 downloads, whose URLs name the bucket's in-cluster address:
        # a client outside the cluster streams through the server instead
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    }
    assert set(trained.values()) == {1}, f"the node overlay pins version 1 of each model: {trained}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "predictors", f"--http_port={http}", f"--grpc_port={grpc}"], cwd=ROOT, env=env
    )
    try:
        wait_ready(f"http://127.0.0.1:{http}", proc, timeout=180)
        yield f"http://127.0.0.1:{http}", grpc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def outputs(answer: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"] for o in answer["outputs"]}


@pytest.mark.parametrize("model", MODELS)
def test_v2_rest_grpc_and_query_string_through_the_service_answer_what_make_serve_answers(
    platform: Node, host_server: tuple[str, int], model: str, tmp_path: Path
) -> None:
    host_url, host_grpc = host_server
    ip = platform.cluster_ip(f"{k8s_name(model)}-predictor")
    body = v2_body(model, rows=5, seed=11)

    on_node = httpx.post(f"http://{ip}/v2/models/{model}/infer", json=body, timeout=30)
    on_host = httpx.post(f"{host_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert on_node.status_code == 200, on_node.text
    assert outputs(on_node.json()) == outputs(on_host.json())
    assert on_node.json()["model_version"] == on_host.json()["model_version"] == "1"

    # the seed's query-string call, with the first row's values
    first = {i["name"]: i["data"][0] for i in body["inputs"]}
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in first.items()}
    q_node = httpx.get(f"http://{ip}/api/v1/predict/{model}", params=query, timeout=30)
    q_host = httpx.get(f"{host_url}/api/v1/predict/{model}", params=query, timeout=30)
    assert q_node.status_code == 200, q_node.text
    assert q_node.json() == q_host.json()

    # V2 gRPC with the official client (in its own process: see tests/triton_grpc_call.py), through
    # the Service's gRPC port
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))

    def grpc_scores(address: str) -> Any:
        cmd = [sys.executable, "-m", "tests.triton_grpc_call", address, model, str(request)]
        answer = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
        return answer["outputs"], answer["model_version"]

    assert grpc_scores(f"{ip}:8081") == grpc_scores(f"127.0.0.1:{host_grpc}")


def test_services_resolve_by_name_inside_the_cluster(platform: Node, trained: dict[str, int]) -> None:
    pod = platform.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=monitoring")["items"][0]["metadata"][
        "name"
    ]
    script = (
        "import socket\n"
        "for name in ['mlflow', 'mlflow.constructos-ml.svc.cluster.local', 'credit-risk-predictor',"
        " 'kubernetes.default.svc.cluster.local', 'kafka.constructos-ml.svc.cluster.local']:\n"
        "    print(name, socket.gethostbyname(name))\n"
    )
    done = platform.kubectl("exec", "-n", NAMESPACE, pod, "-c", "monitoring", "--", "python", "-c", script)
    resolved = dict(line.split() for line in done.stdout.splitlines())
    assert resolved["mlflow"] == platform.cluster_ip("mlflow")
    assert resolved["credit-risk-predictor"] == platform.cluster_ip("credit-risk-predictor")
    assert resolved["kubernetes.default.svc.cluster.local"] == platform.cluster_ip("kubernetes", "default")
    assert (
        resolved["kafka.constructos-ml.svc.cluster.local"]
        == Path(os.environ.get("NODE_DIR", ROOT / "data" / "node")).joinpath("address").read_text().strip()
    )


def test_pods_run_as_non_root_with_a_read_only_root_filesystem(platform: Node, trained: dict[str, int]) -> None:
    for label, container in [
        ("serving.kserve.io/inferenceservice=credit-risk", "kserve-container"),
        ("app.kubernetes.io/name=trigger", "trigger"),
        ("app.kubernetes.io/name=mlflow", "mlflow"),
        ("app.kubernetes.io/name=monitoring", "monitoring"),
    ]:
        pod = platform.get("pods", "-n", NAMESPACE, "-l", label)["items"][0]["metadata"]["name"]
        script = (
            "import os\nprint(os.getuid(), os.getgid())\n"
            "try:\n    open('/written-by-a-test', 'w')\n    print('writable')\n"
            "except OSError as e:\n    print('read-only', e.errno)\n"
        )
        done = platform.kubectl("exec", "-n", NAMESPACE, pod, "-c", container, "--", "python", "-c", script)
        uid_line, fs_line = done.stdout.splitlines()
        assert uid_line.split()[0] == "10001", f"{pod}: {done.stdout}"
        assert fs_line.startswith("read-only"), f"{pod}: {done.stdout}"


# What each ServiceAccount may do, beyond what every authenticated identity may (discovery, self
# reviews). On the node the trigger also runs the training, whose deploy step pins the new version.
ISVC_RIGHTS = ("inferenceservices.serving.kserve.io", ("get", "list", "patch", "watch"))
NEEDED = {
    "trigger": {
        ("runs.pipelines.kubeflow.org", ("create", "get", "list")),
        ("experiments.pipelines.kubeflow.org", ("create", "get", "list")),
        ISVC_RIGHTS,
    },
    "rollout": {ISVC_RIGHTS},
}


def can_i_list(node: Node, account: str) -> set[tuple[str, tuple[str, ...]]]:
    done = node.kubectl("auth", "can-i", "--list", "-n", NAMESPACE, f"--as=system:serviceaccount:{NAMESPACE}:{account}")
    rules = set()
    for line in done.stdout.splitlines()[1:]:
        if line[:1].isspace():  # a non-resource URL (discovery, health): every identity has them
            continue
        resource, verbs = line.split()[0], line[line.rindex("[") + 1 : line.rindex("]")].split()
        if resource.startswith(("selfsubject", "/")) or "*" in resource:
            continue
        rules.add((resource, tuple(sorted(verbs))))
    return rules


@pytest.mark.parametrize("account", sorted(NEEDED))
def test_each_service_account_may_do_only_what_it_needs(platform: Node, account: str) -> None:
    assert can_i_list(platform, account) == NEEDED[account]


def test_a_predictor_whose_model_cannot_load_stays_not_ready_with_the_reason(
    platform: Node, trained: dict[str, int]
) -> None:
    isvc = platform.get("inferenceservice", "credit-risk", "-n", NAMESPACE)
    broken = {
        "apiVersion": isvc["apiVersion"],
        "kind": "InferenceService",
        "metadata": {
            "name": "credit-risk-broken",
            "namespace": NAMESPACE,
            "annotations": isvc["metadata"]["annotations"],
        },
        "spec": json.loads(json.dumps(isvc["spec"])),
    }
    broken["spec"]["predictor"]["minReplicas"] = broken["spec"]["predictor"]["maxReplicas"] = 1
    broken["spec"]["predictor"]["containers"][0]["args"] = ["--model_uri=models:/credit_risk/999"]
    platform.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(broken))
    try:

        def started() -> bool:
            pods = platform.get("pods", "-n", NAMESPACE, "-l", "serving.kserve.io/inferenceservice=credit-risk-broken")[
                "items"
            ]
            return bool(pods) and all(
                s.get("state", {}).get("running") for p in pods for s in p["status"].get("containerStatuses", [])
            )

        platform.wait_until("the broken predictor's pod running", started, 180)
        pod = platform.get("pods", "-n", NAMESPACE, "-l", "serving.kserve.io/inferenceservice=credit-risk-broken")[
            "items"
        ][0]
        name = pod["metadata"]["name"]

        def told() -> bool:
            logs = platform.kubectl("logs", "-n", NAMESPACE, name, "-c", "kserve-container", check=False).stdout
            events = platform.kubectl(
                "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name}", check=False
            ).stdout
            return "cannot load models:/credit_risk/999" in logs and "Readiness probe failed" in events

        platform.wait_until("the reason in the logs and a failed readiness probe in the events", told, 180)
        pod = platform.get("pod", name, "-n", NAMESPACE)
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
        assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), "it crash-loops instead"
        assert not isvc_ready(platform, "credit-risk-broken")
    finally:
        platform.kubectl(
            "delete", "inferenceservice", "credit-risk-broken", "-n", NAMESPACE, "--wait=false", check=False
        )


def predictor_pods(node: Node, isvc: str) -> dict[str, bool]:
    """Pod name -> Ready, of an InferenceService's predictor (terminating pods left out)."""
    pods = node.get("pods", "-n", NAMESPACE, "-l", f"serving.kserve.io/inferenceservice={isvc}")["items"]
    return {
        p["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])
        )
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


def test_a_rolling_restart_of_a_predictor_under_load_loses_no_request(platform: Node, trained: dict[str, int]) -> None:
    """KServe owns the predictor's Deployment and reverts `kubectl rollout restart` on it (the new
    ReplicaSet is scaled away at once); a restart goes through the InferenceService: a pod annotation
    on the predictor, which KServe rolls out (surge one pod, readiness first, preStop pause)."""
    ip = platform.cluster_ip("credit-risk-predictor")
    body = v2_body("credit_risk", rows=1)
    before = predictor_pods(platform, "credit-risk")
    assert len(before) == 2 and all(before.values()), before
    stop = threading.Event()
    results: Counter[str] = Counter()

    def load() -> None:  # bounded: stops at the event or after 20,000 requests
        with httpx.Client(timeout=10) as client:
            for _ in range(20_000):
                if stop.is_set():
                    return
                try:
                    code = client.post(f"http://{ip}/v2/models/credit_risk/infer", json=body).status_code
                    results["ok" if code == 200 else f"http {code}"] += 1
                except httpx.HTTPError as exc:
                    results[type(exc).__name__] += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(3)
        restart = {"spec": {"predictor": {"annotations": {"constructos.io/restarted-at": str(time.time())}}}}
        platform.kubectl(
            "patch", "inferenceservice", "credit-risk", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(restart)
        )

        def replaced() -> bool:
            now = predictor_pods(platform, "credit-risk")
            return len(now) == 2 and all(now.values()) and not set(now) & set(before)

        platform.wait_until("both predictor pods replaced and Ready", replaced, 300)
        time.sleep(15)  # the old pods' preStop pause and in-flight requests are over
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert results["ok"] > 100, results
    assert set(results) == {"ok"}, f"failed requests during the restart: {results}"


def test_an_image_missing_from_containerd_is_a_clear_error(platform: Node) -> None:
    done = subprocess.run(
        ["bash", "scripts/node.sh", "prepare", "ghcr.io/constructos/ml-platform:not-built"],
        cwd=ROOT,
        env=os.environ | {"NODE_DIR": str(platform.kubeconfig.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "image ghcr.io/constructos/ml-platform:not-built is not in the node's containerd" in done.stderr
    assert "make node-image" in done.stderr


def landed_ids(model: str) -> list[str]:
    """Every event id the trigger landed for ``model`` in the node's bucket (read from the host)."""
    from pipelines.storage import Store
    from pipelines.streaming.landing.parts import read_landed

    env = stores_env()
    store = Store("s3://constructos-ml/landing", endpoint_url=env["CONSTRUCTOS_S3_ENDPOINT_URL"])
    frame = read_landed(store, model)
    return [] if frame.empty else frame["event_id"].astype(str).tolist()


def stores_env() -> dict[str, str]:
    path = Path(os.environ.get("CONSTRUCTOS_STORES_ENV") or ROOT / "data" / "stores" / "stores.env")
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_a_trigger_pod_killed_mid_batch_loses_and_duplicates_nothing(
    platform: Node, trained: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_specs.synthetic import generate, to_events
    from pipelines.streaming.publish import publish_events

    for key, value in stores_env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    model = "stock_demand"
    events = to_events(generate(model, 3000, seed=int(time.time())), seed=int(time.time()))
    sent = {e["event_id"] for e in events}
    assert not sent & set(landed_ids(model))

    def publish() -> None:  # 30 batches over ~10 s, so the kill lands in the middle of them
        for start in range(0, len(events), 100):
            publish_events(model, events[start : start + 100])
            time.sleep(0.3)

    sender = threading.Thread(target=publish)
    sender.start()
    time.sleep(4)
    pod = platform.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=trigger")["items"][0]["metadata"]["name"]
    platform.kubectl("delete", "pod", pod, "-n", NAMESPACE, "--grace-period=0", "--force")
    sender.join(timeout=120)
    platform.kubectl("rollout", "status", "deployment/trigger", "-n", NAMESPACE, "--timeout=300s", timeout=320)

    def all_landed() -> bool:
        return sent <= set(landed_ids(model))

    platform.wait_until("every event landed after the kill", all_landed, 300, every=5)
    landed = Counter(i for i in landed_ids(model) if i in sent)
    assert set(landed) == sent
    assert max(landed.values()) == 1, f"landed twice: {[i for i, n in landed.items() if n > 1][:5]}"
