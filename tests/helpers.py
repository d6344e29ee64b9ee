"""Test helpers that build real artefacts (no stubs)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np

from feature_specs import Validator, load_spec
from feature_specs.reference import build_reference, write_reference
from feature_specs.transform import SKOPS_TRUSTED_TYPES, build_model
from tests.spec_data import rows as spec_rows


def save_trained_model(name: str, path: Path, *, rows: int = 4000, seed: int = 7, version: str = "1") -> Path:
    """Train ``name`` on test rows and save it the way the pipeline logs it (with its reference)."""
    spec = load_spec(name)
    data = spec_rows(name, rows, seed=seed)
    features = Validator(spec, max_batch=rows).frame(data[spec.feature_names])
    pipeline = build_model(spec).fit(features, data[spec.target.name])
    mlflow.sklearn.save_model(
        pipeline,
        str(path),
        input_example=features.head(3),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        metadata={"spec_name": name, "spec_version": spec.version, "model_version": version},
    )
    scores = pipeline.predict_proba(features)[:, 1] if spec.is_classifier else pipeline.predict(features)
    write_reference(build_reference(spec, features, scores), path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def v2_body(name: str, rows: int = 3, seed: int = 0) -> dict[str, Any]:
    """A V2 request with every feature as a named [N] tensor, from the test rows of the spec."""
    from tests.spec_data import rows as spec_rows

    spec = load_spec(name)
    frame = spec_rows(name, rows, seed=seed)
    inputs = []
    for f in spec.features:
        values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in frame[f.name].tolist()]
        fill = f.impute if f.impute != "median" else (f.min or 0)
        values = [fill if v is None else v for v in values]
        if f.dtype == "int":
            values = [int(v) for v in values]
        if f.dtype == "bool":
            values = [bool(v) for v in values]
        inputs.append({"name": f.name, "shape": [rows], "datatype": f.v2_datatype, "data": values})
    return {"id": "req-1", "inputs": inputs}
