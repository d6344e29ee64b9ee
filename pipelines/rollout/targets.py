"""Where an InferenceService lives: the cluster (Kubernetes API) or a GitOps overlay (kustomize)."""

from __future__ import annotations

import json
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
    plan_start,
)


class Target(Protocol):
    def get(self, model: str) -> Resource: ...
    def describe(self, model: str, isvc: Resource, target: Serving) -> str: ...
    def apply(self, model: str, isvc: Resource, target: Serving) -> str: ...


class Cluster:
    """The live InferenceService, through the Kubernetes API."""

    def __init__(self, namespace: str, api: Any = None) -> None:
        from kubernetes import client, config

        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, OSError) as e:
                    raise RolloutError(f"no cluster to talk to ({e}); use --overlay ENV for GitOps") from e
            api = client.CustomObjectsApi()
        self.api = api
        self.namespace = namespace

    def get(self, model: str) -> Resource:
        obj: Resource = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, isvc_name(model))
        return obj

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"patch InferenceService {self.namespace}/{isvc_name(model)}: {json.dumps(merge_patch(isvc, target))}"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        body = merge_patch(isvc, target)
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, isvc_name(model), body)
        return self.describe(model, isvc, target)


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
    return cluster.apply(model, isvc, plan_start(model, Serving.from_isvc(isvc), version, percent).steps[0])


def overlay_dir(name: str, manifests: Path) -> Path:
    direct = Path(name)
    return direct if direct.is_dir() else manifests / "overlays" / name
