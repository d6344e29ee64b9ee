"""kustomize, the one tool that renders the manifests: what ``make manifests``' checks and the
rollout's GitOps target both build overlays with."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]


def find_kustomize() -> str | None:
    """$KUSTOMIZE (`make` points it at the pinned one in the tools cache), else PATH."""
    configured = os.environ.get("KUSTOMIZE")
    if configured and Path(configured).is_file():
        return configured
    return shutil.which("kustomize")


def build(overlay: Path, kustomize: str | None = None) -> list[Resource]:
    """Render an overlay with a real kustomize."""
    kustomize = kustomize or find_kustomize()
    if not kustomize:
        raise RuntimeError("kustomize not found: `make kustomize` installs the pinned one (or set KUSTOMIZE)")
    proc = subprocess.run([kustomize, "build", str(overlay)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize build {overlay} failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
