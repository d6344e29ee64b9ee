"""The real single-node Kubernetes of ``make node-up`` (kubelet, containerd, CoreDNS, KServe's own
controller in Standard mode) and the platform deployed on it (``make deploy ENV=node``), for the
tests marked ``node``.

``node`` (session): the node behind ``NODE_KUBECONFIG`` (default: the checkout's
``data/node/kubeconfig``); the tests are skipped with the reason when it is not Ready.
``platform`` (session): the platform's namespace on it, skipped when ``make deploy ENV=node`` has
not run. Both talk to the node with its own ``kubectl`` and reach Services by their ClusterIPs
(kube-proxy's rules on this host route them, as on any node).
``tests/conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "constructos-ml"
KUBECONFIG = Path(os.environ.get("NODE_KUBECONFIG") or ROOT / "data" / "node" / "kubeconfig")


@dataclass
class Node:
    kubeconfig: Path
    kubectl_path: str

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def cluster_ip(self, service: str, namespace: str = NAMESPACE) -> str:
        return str(self.get("service", service, "-n", namespace)["spec"]["clusterIP"])

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float, every: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
                raise AssertionError(f"{what}: not within {timeout:.0f}s\n{pods}")
            time.sleep(every)

    @contextmanager
    def port_forward(self, target: str, port: int, namespace: str = NAMESPACE) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` (e.g. ``svc/mlflow``): yields the local port."""
        proc = subprocess.Popen(
            [
                self.kubectl_path,
                "--kubeconfig",
                str(self.kubeconfig),
                "-n",
                namespace,
                "port-forward",
                target,
                f":{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 5000"
            if "Forwarding from" not in line:
                proc.kill()
                raise AssertionError(f"port-forward {target} failed: {line}{proc.stderr.read() if proc.stderr else ''}")
            yield int(line.split("->")[0].rsplit(":", 1)[1])
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def node_kubectl() -> str | None:
    built = (
        Path(os.environ.get("CONSTRUCTOS_TOOLS_CACHE", Path.home() / ".cache" / "constructos"))
        / f"kubernetes-{os.environ.get('KUBE_VERSION', 'v1.31.4')}"
        / "kubectl"
    )
    return str(built) if built.is_file() else shutil.which("kubectl")


@pytest.fixture(scope="session")
def node() -> Node:
    kubectl = node_kubectl()
    if not kubectl:
        pytest.skip("no kubectl: `make node-up` builds one")
    if not KUBECONFIG.is_file():
        pytest.skip(f"no node (no kubeconfig at {KUBECONFIG}): run `make node-up` first")
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(KUBECONFIG), "wait", "--for=condition=Ready", "node", "--all", "--timeout=10s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(f"the node of {KUBECONFIG} is not Ready: {done.stderr.strip()}")
    return Node(KUBECONFIG, kubectl)


@pytest.fixture(scope="session")
def platform(node: Node) -> Node:
    found = node.kubectl("get", "deployment", "trigger", "-n", NAMESPACE, check=False)
    if found.returncode != 0:
        pytest.skip("the platform is not deployed on the node: run `make node-image deploy ENV=node` first")
    # a deploy still rolling out replaces pods under the tests' port-forwards: wait for it first
    for deployment in ("mlflow", "monitoring", "trigger"):
        node.kubectl("rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE, "--timeout=600s", timeout=610)
    return node
