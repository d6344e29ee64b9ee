"""A real ``python -m predictors`` (REST + gRPC, all three models, admin token set) shared by the
Open Inference Protocol tests; its log is kept for the tests that read it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_ready

ADMIN_TOKEN = "s3cret-admin-token"


@dataclass(frozen=True)
class OipServer:
    url: str
    grpc: str  # host:port
    log: Path


@pytest.fixture(scope="session")
def oip_server(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OipServer]:
    root = model_dirs["credit_risk"].parent
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("oip") / "server.log"
    env = os.environ | {
        "CONSTRUCTOS_MODEL_URI_TEMPLATE": str(root / "{model}"),
        "CONSTRUCTOS_ADMIN_TOKEN": ADMIN_TOKEN,
        "CONSTRUCTOS_MAX_BODY_BYTES": str(1024 * 1024),
        # the protocol does not depend on the runtime; scikit-learn loads much faster than ONNX
        # conversion on a busy machine (test_predictors covers the ONNX path)
        "CONSTRUCTOS_USE_ONNX": "false",
    }
    cmd = [sys.executable, "-m", "predictors", f"--http_port={http_port}", f"--grpc_port={grpc_port}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_ready(url, proc, timeout=600)  # three models, ONNX conversion: slow on a busy machine
        yield OipServer(url, f"127.0.0.1:{grpc_port}", log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
