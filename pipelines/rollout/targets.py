"""Where an InferenceService lives: the cluster (Kubernetes API) or a GitOps overlay (kustomize).

**One owner per field.** Online, the rollout writes only its fields — the model URI (inside the
container list, which KServe's CRD makes one atomic field), ``canaryTrafficPercent`` and the
stable-URI annotation — as JSON merge patches under the field manager ``constructos-rollout``,
with the ``resourceVersion`` it read (a concurrent writer makes it a conflict, never an
overwrite). GitOps applies the overlay server-side as ``constructos-gitops`` (``make deploy``):
an apply that would change a field the rollout set fails with a conflict that names it, instead
of silently dropping a running canary; ``rollout sync --overlay ENV`` writes the live rollout
state into the overlay so the next apply agrees with it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from pipelines.rollout.plan import (
    GROUP,
    NAMESPACE,
    PLURAL,
    VERSION,
    Resource,
    RolloutError,
    Serving,
    isvc_name,
    merge_patch,
    overlay_ops,
    plan_pin,
    plan_start,
    revision_ready,
)

FIELD_MANAGER = "constructos-rollout"
GITOPS_FIELD_MANAGER = "constructos-gitops"


class Conflict(RolloutError):
    """The InferenceService changed since it was read (HTTP 409): re-read and re-plan."""


class Target(Protocol):
    def get(self, model: str) -> Resource: ...
    def describe(self, model: str, isvc: Resource, target: Serving) -> str: ...
    def apply(self, model: str, isvc: Resource, target: Serving) -> str: ...
    def wait_ready(self, model: str, timeout_s: float) -> str: ...


class Cluster:
    """The live InferenceService, through the Kubernetes API."""

    def __init__(self, namespace: str, api: Any = None) -> None:
        from kubernetes import client, config

        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # read now, not at import
                except (config.ConfigException, OSError) as e:
                    raise RolloutError(f"no cluster to talk to ({e}); use --overlay ENV for GitOps") from e
            api = client.CustomObjectsApi()
        self.api = api
        self.namespace = namespace

    def _call(self, model: str, method: str, *args: Any, **kwargs: Any) -> Resource:
        from kubernetes.client.exceptions import ApiException

        name = f"InferenceService {self.namespace}/{isvc_name(model)}"
        try:
            obj: Resource = getattr(self.api, method)(
                GROUP, VERSION, self.namespace, PLURAL, isvc_name(model), *args, **kwargs
            )
        except ApiException as e:
            if e.status == 409:
                raise Conflict(f"{name} changed since it was read (resourceVersion conflict)") from e
            if e.status == 404:
                raise RolloutError(f"{name} does not exist") from e
            raise RolloutError(f"{name}: the API server answered {e.status} {e.reason}: {e.body}") from e
        return obj

    def get(self, model: str) -> Resource:
        return self._call(model, "get_namespaced_custom_object")

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"patch InferenceService {self.namespace}/{isvc_name(model)}: {json.dumps(merge_patch(isvc, target))}"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        body = merge_patch(isvc, target)
        self._call(model, "patch_namespaced_custom_object", body, field_manager=FIELD_MANAGER)
        return self.describe(model, isvc, target)

    def wait_ready(self, model: str, timeout_s: float, poll_s: float = 2.0) -> str:
        deadline = time.monotonic() + timeout_s
        while not revision_ready(isvc := self.get(model)):
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"{model}: the restored revision is not ready after {timeout_s:.0f}s; traffic stays on the "
                    "previous revision (canary pinned at 0%); run `rollback` again to finish"
                )
            time.sleep(poll_s)
        revision = isvc["status"]["components"]["predictor"]["latestReadyRevision"]
        return f"revision {revision} of InferenceService {self.namespace}/{isvc_name(model)} is ready"


class Overlay:
    """GitOps: the overlay's rollout file, rendered with kustomize."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, model: str) -> Resource:
        from pipelines.manifests.check import build

        for res in build(self.directory):
            if res.get("kind") == "InferenceService" and res["metadata"]["name"] == isvc_name(model):
                return res
        raise RolloutError(f"{self.directory} renders no InferenceService {isvc_name(model)}")

    def path(self, model: str) -> Path:
        return self.directory / "rollout" / f"{model}.yaml"

    def text(self, model: str, isvc: Resource, target: Serving) -> str:
        header = (
            f"# Rollout state of {model} in {self.directory.name}, written by "
            f"`python -m pipelines.rollout <cmd> {model} --overlay {self.directory.name}`.\n"
        )
        return header + yaml.safe_dump(overlay_ops(isvc, target), sort_keys=False)

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"{self.path(model)}:\n{self.text(model, isvc, target)}"

    def wait_ready(self, model: str, timeout_s: float) -> str:
        return "once the cluster reports the restored revision ready, run the command again"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        path = self.path(model)
        if not path.is_file():
            raise RolloutError(f"{path} does not exist: the overlay has no rollout file for {model}")
        path.write_text(self.text(model, isvc, target))
        return f"wrote {self.describe(model, isvc, target)}"


def start_canary(
    model: str, version: str, percent: int | None = None, *, namespace: str = NAMESPACE, api: Any = None
) -> str:
    """For a pipeline's deploy step: put ``version`` on a canary of the live InferenceService,
    touching nothing else (the caller has set the ``challenger`` alias). Returns the patch."""
    cluster = Cluster(namespace, api)
    isvc = cluster.get(model)
    return cluster.apply(model, isvc, plan_start(model, Serving.from_isvc(isvc), version, percent).steps[0].target)


def pin_version(model: str, version: str, *, namespace: str = NAMESPACE, api: Any = None) -> str:
    """For a pipeline's deploy step: the live InferenceService serves exactly ``version``."""
    cluster = Cluster(namespace, api)
    isvc = cluster.get(model)
    return cluster.apply(model, isvc, plan_pin(model, Serving.from_isvc(isvc), version).steps[0].target)


def overlay_dir(name: str, manifests: Path) -> Path:
    direct = Path(name)
    return direct if direct.is_dir() else manifests / "overlays" / name
