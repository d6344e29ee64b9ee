"""Conformance with the published Open Inference Protocol documents (vendored in ``tests/oip``):
every REST response validates against ``rest_predict_v2.yaml``, our gRPC service speaks
``grpc_predict_v2.proto``, and a schema-driven fuzz run over all routes finds no 5xx."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from predictors.runtime.registry import model_names
from tests.helpers import v2_body
from tests.oip_server import OipServer

pytestmark = pytest.mark.integration
OIP = Path(__file__).resolve().parents[1] / "oip"
HTTP = httpx.Client(timeout=60)  # a busy machine answers slowly
SPEC: dict[str, Any] = yaml.safe_load((OIP / "rest_predict_v2.yaml").read_text())


def validate(body: Any, component: str) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": SPEC["components"]}
    jsonschema.validate(body, schema)


def test_every_route_answers_in_the_published_schema(oip_server: OipServer) -> None:
    url = oip_server.url
    for path in ("/v2", "/v2/"):
        response = HTTP.get(url + path)
        assert response.status_code == 200
        validate(response.json(), "metadata_server_response")
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert HTTP.get(url + path).status_code == 200
    for name in model_names():
        for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
            validate(HTTP.get(url + prefix).json(), "metadata_model_response")
            assert HTTP.get(f"{url}{prefix}/ready").status_code == 200
            ok = HTTP.post(f"{url}{prefix}/infer", json=v2_body(name))
            assert ok.status_code == 200
            validate(ok.json(), "inference_response")
            assert "parameters" not in ok.json() and all("parameters" not in o for o in ok.json()["outputs"])
            bad = HTTP.post(f"{url}{prefix}/infer", json={"inputs": v2_body(name)["inputs"][:1]})
            assert bad.status_code == 400
            validate(bad.json(), "inference_error_response")
        for path in (f"/v2/models/{name}/versions/2", f"/v2/models/{name}/versions/2/ready"):
            response = HTTP.get(url + path)
            assert response.status_code == 404
            validate(response.json(), "metadata_model_error_response")
        wrong = HTTP.post(f"{url}/v2/models/{name}/versions/2/infer", json=v2_body(name))
        assert wrong.status_code == 404
        validate(wrong.json(), "inference_error_response")


def _proto_outline(text: str) -> dict[str, set[str]]:
    """rpc names and, per message, its field names, from the .proto text."""
    outline = {"rpc": set(re.findall(r"^\s*rpc\s+(\w+)\s*\(", text, re.M))}
    depth, stack = 0, []
    for line in text.splitlines():
        line = line.split("//")[0]
        opened = re.match(r"\s*(message|oneof)\s+(\w+)\s*\{", line)
        if opened:
            stack.append((opened.group(1), opened.group(2), depth))
            outline.setdefault(opened.group(2), set())
        field = re.match(r"\s*(?:repeated\s+)?[\w.<>, ]+?\s+(\w+)\s*=\s*\d+\s*;", line)
        if field and stack:
            message = next(name for kind, name, _ in reversed(stack) if kind == "message")
            outline[message].add(field.group(1))
        depth += line.count("{") - line.count("}")
        while stack and depth <= stack[-1][2]:
            stack.pop()
    return outline


def test_grpc_service_speaks_the_published_proto() -> None:
    published = _proto_outline((OIP / "grpc_predict_v2.proto").read_text())
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert published["rpc"] <= {m.name for m in service.methods}
    messages: dict[str, Any] = {}

    def collect(descriptor: Any) -> None:
        messages[descriptor.name] = descriptor
        for nested in descriptor.nested_types:
            collect(nested)

    for descriptor in pb.DESCRIPTOR.message_types_by_name.values():
        collect(descriptor)
    for message, fields in published.items():
        if message != "rpc" and message in messages:
            assert fields <= {f.name for f in messages[message].fields}, message


def _fuzz_schema() -> dict[str, Any]:
    """The published document made machine-usable: ``${NAME}`` path templates as ``{NAME}``,
    model names from this server (plus an unknown one), and the unversioned routes too."""
    spec = copy.deepcopy(SPEC)
    paths = {}
    for path, item in spec["paths"].items():
        fixed = path.replace("${", "{")
        for parameter in item.get("parameters", []):
            if parameter["name"] == "MODEL_NAME":
                parameter["schema"] = {"type": "string", "enum": [*model_names(), "unknown_model"]}
        paths[fixed] = item
        if "{MODEL_VERSION}" in fixed:
            unversioned = copy.deepcopy(item)
            unversioned["parameters"] = [p for p in unversioned["parameters"] if p["name"] != "MODEL_VERSION"]
            paths[fixed.replace("/versions/{MODEL_VERSION}", "")] = unversioned
    spec["paths"] = paths
    return spec


FUZZ = schemathesis.openapi.from_dict(_fuzz_schema())


@FUZZ.parametrize()
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_schema_fuzz_finds_no_server_error(case: Any, oip_server: OipServer) -> None:
    response = case.call(base_url=oip_server.url)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
