"""GitOps: the overlay's rollout file (``rollout/<model>.yaml``, JSON 6902 operations), rendered
with kustomize; committed and applied instead of patching the cluster."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.rollout.patches import overlay_ops
from pipelines.rollout.plan import Step
from pipelines.rollout.state import Resource, RolloutError, Serving, isvc_name


class Overlay:
    """GitOps: the overlay's rollout file, rendered with kustomize."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, model: str) -> Resource:
        from pipelines.kustomize import build

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

    def wait(self, model: str, step: Step, timeout_s: float) -> list[str]:
        if not (step.wait_ready or step.wait_canary):
            return []
        what = "the canary" if step.wait_canary else "the new revision / stable predictor"
        return [f"once the cluster reports {what} ready, commit and run the command again"]

    def drain(self, model: str, step: Step, drain_s: float, timeout_s: float) -> list[str]:
        return ["once the gateway has taken the canary's share away, run the command again"] if step.drain else []

    def smoke_url(self, model: str) -> str:
        raise RolloutError(f"{model}: a smoke test needs the cluster; give --smoke-url URL with --overlay")

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        path = self.path(model)
        if not path.is_file():
            raise RolloutError(f"{path} does not exist: the overlay has no rollout file for {model}")
        path.write_text(self.text(model, isvc, target))
        return f"wrote {self.describe(model, isvc, target)}"


def overlay_dir(name: str, manifests: Path) -> Path:
    direct = Path(name)
    return direct if direct.is_dir() else manifests / "overlays" / name
