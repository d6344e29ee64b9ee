"""The real Kubernetes API server of ``make cluster-up`` (kube-apiserver + etcd + the KServe,
Strimzi and Prometheus Operator CRDs) for the tests marked ``cluster``.

``kube`` (session): the server behind ``CONSTRUCTOS_KUBECONFIG`` (default: the checkout's
``data/cluster/kubeconfig``, where ``make cluster-up`` writes it); the tests are skipped with the
reason when it does not answer. It has no controllers and no kubelet: what it proves is API
semantics, schemas, RBAC and patches — pods never run, and no status changes unless a test
writes it (playing the KServe controller).
``tests/conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KUBECONFIG = Path(os.environ.get("CONSTRUCTOS_KUBECONFIG") or ROOT / "data" / "cluster" / "kubeconfig")


@dataclass
class Kube:
    kubeconfig: Path
    kubectl_path: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def can_i(self, verb: str, resource: str, namespace: str, user: str) -> bool:
        """The API server's RBAC decision (a SubjectAccessReview, as KFP's API server asks it too:
        `kubectl auth can-i` cannot name a group the server does not serve, like KFP's runs).
        ``resource`` is ``plural[.group][/subresource]``."""
        from kubernetes import client

        plural_group, _, subresource = resource.partition("/")
        plural, _, group = plural_group.partition(".")
        attributes = client.V1ResourceAttributes(
            namespace=namespace, verb=verb, group=group, resource=plural, subresource=subresource
        )
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(user=user, resource_attributes=attributes)
        )
        answer = client.AuthorizationV1Api(self.admin.api_client).create_subject_access_review(review)
        return bool(answer.status.allowed)

    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace (never deleted: without the namespace controller it would stay Terminating)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name

    def custom_objects(self, as_user: str | None = None) -> Any:
        """A ``CustomObjectsApi`` of the Kubernetes client, as the admin or impersonating ``as_user``."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        if as_user:
            api.set_default_header("Impersonate-User", as_user)
        return client.CustomObjectsApi(api)

    @cached_property
    def admin(self) -> Any:
        return self.custom_objects()


def api_server_answers(kubeconfig: Path, kubectl: str) -> str | None:
    """None when the server answers; else why not."""
    if not kubeconfig.is_file():
        return f"no kubeconfig at {kubeconfig}"
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return None if done.returncode == 0 else f"the API server of {kubeconfig} does not answer: {done.stderr.strip()}"


@pytest.fixture(scope="session")
def kube() -> Kube:
    kubectl = shutil.which("kubectl") or str(
        Path(os.environ.get("CONSTRUCTOS_TOOLS_CACHE", Path.home() / ".cache" / "constructos"))
        / f"kubernetes-{os.environ.get('KUBE_VERSION', 'v1.31.4')}"
        / "kubectl"
    )
    if not Path(kubectl).is_file():
        pytest.skip("no kubectl: `make cluster-up` builds one when none is on PATH")
    why_not = api_server_answers(KUBECONFIG, kubectl)
    if why_not:
        pytest.skip(f"no Kubernetes API server ({why_not}): run `make cluster-up` first")
    return Kube(KUBECONFIG, kubectl)
