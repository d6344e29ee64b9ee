"""One serving error type: a ServingError answers with its own status and ``{"error": message}``
through KServe's routes as through the platform's, and every status it is raised with has its
gRPC code."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
from fastapi.testclient import TestClient

from predictors.endpoints.grpc_v2 import GRPC_CODES
from predictors.runtime.registry import predictor_class
from predictors.server import create_app
from tests.helpers import v2_body

PREDICTORS = Path(__file__).resolve().parents[3] / "predictors"


def test_kserve_routes_answer_with_the_errors_own_status(model_dirs: dict[str, Path]) -> None:
    model = predictor_class("lead_score")(str(model_dirs["lead_score"]))
    body = v2_body("lead_score", rows=1)
    row = {t["name"]: t["data"][0] for t in body["inputs"]}
    with TestClient(create_app([model])) as client:
        assert client.post("/v1/models/lead_score:predict", json={"instances": [row]}).status_code == 200
        model.scorer = None  # unloaded after KServe checked readiness: 503 (KServe's InvalidInput handler says 400)
        v1 = client.post("/v1/models/lead_score:predict", json={"instances": [row]})
        model.ready = False
        query = client.get("/api/v1/predict/lead_score?industry=Construction")
        v2 = client.post("/v2/models/lead_score/infer", json=body)
    assert (v1.status_code, v1.json()) == (503, {"error": "lead_score: model is not loaded"})
    assert (query.status_code, query.json()) == (503, {"error": "model lead_score is not ready"})
    assert (v2.status_code, v2.json()) == (503, {"error": "model lead_score is not ready"})


def raised_statuses() -> set[int]:
    """The statuses the serving code raises ServingError with (400 when it names none)."""
    found = set()
    for source in PREDICTORS.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ServingError":
                given = node.args[1:] + [k.value for k in node.keywords if k.arg == "status"]
                found |= {n.value for n in given if isinstance(n, ast.Constant)} if given else {400}
    return found


def test_every_status_raised_has_its_grpc_code() -> None:
    raised = raised_statuses()
    assert {400, 401, 403, 404, 409, 503} <= raised, raised  # the scan sees what the code raises
    assert raised <= set(GRPC_CODES), f"no gRPC code for {raised - set(GRPC_CODES)}"
    assert GRPC_CODES[503] == grpc.StatusCode.UNAVAILABLE and GRPC_CODES[404] == grpc.StatusCode.NOT_FOUND
