"""Serving at its edges, against a real ModelServer: malformed binary-extension bodies, the body
limit, OIP error bodies, one WARNING line per client mistake, and the locked-down model
repository extension (REST and gRPC)."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.helpers import v2_body
from tests.oip_server import ADMIN_TOKEN, OipServer

pytestmark = pytest.mark.integration
INFER = "/v2/models/credit_risk/infer"


def binary_request(
    tensor: dict[str, Any], raw: bytes, header_length: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """credit_risk's JSON body with ``tensor`` replaced by binary data ``raw``."""
    body = v2_body("credit_risk", rows=1)
    body["inputs"] = [t for t in body["inputs"] if t["name"] != tensor["name"]] + [tensor]
    head = json.dumps(body).encode()
    return head + raw, {"Inference-Header-Content-Length": header_length or str(len(head))}


BYTES_ONE = {"name": "contract_type", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}
FP64_ONE = {"name": "avg_days_to_pay", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
MALFORMED = {
    "header length not a number": binary_request(FP64_ONE, struct.pack("<d", 40.0), "forty"),
    "header length past the body": binary_request(FP64_ONE, struct.pack("<d", 40.0), "999999"),
    "truncated binary tensor": binary_request(FP64_ONE, struct.pack("<f", 40.0)),
    "BYTES length prefix too long": binary_request(BYTES_ONE, struct.pack("<I", 99) + b"abcd"),
    "binary data for a lower-case datatype": binary_request(FP64_ONE | {"datatype": "fp64"}, struct.pack("<d", 4)),
    "NaN in binary FP64": binary_request(FP64_ONE, struct.pack("<d", float("nan"))),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_binary_extension_is_400(oip_server: OipServer, case: str) -> None:
    body, headers = MALFORMED[case]
    response = httpx.post(oip_server.url + INFER, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{not utf-8", b"[" * 10_000 + b"]" * 10_000, json.dumps(v2_body("credit_risk")).replace("FP64", "fp64")],
)
def test_bad_json_bodies_get_oip_errors(oip_server: OipServer, body: bytes | str) -> None:
    response = httpx.post(oip_server.url + INFER, content=body)  # no Content-Type: as tritonclient sends
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text


def test_declared_oversized_body_is_refused_before_it_is_read(oip_server: OipServer) -> None:
    host, port = oip_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n{{".encode())
        answer = ""
        while '"error"' not in answer and (chunk := s.recv(4096)):  # answered with 199.99 MB still unsent
            answer += chunk.decode()  # the head and the body may come in separate segments
    assert answer.startswith("HTTP/1.1 413") and '"error"' in answer


def test_chunked_body_over_the_limit_is_413(oip_server: OipServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b" " * 65_536  # 4 MiB in all; the fixture's limit is 1 MiB

    try:
        response = httpx.post(oip_server.url + INFER, content=chunks())
    except httpx.HTTPError:  # the server may close before the upload ends; then ask again
        pytest.fail("no 413 answer")
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_client_errors_log_one_warning_line_without_traceback(oip_server: OipServer) -> None:
    marker = "no-such-model-for-the-log-test"
    assert httpx.get(f"{oip_server.url}/v2/models/{marker}/ready").status_code == 404
    assert httpx.get(f"{oip_server.url}/v2/{marker}").status_code == 404
    assert httpx.post(f"{oip_server.url}/v1/models/{marker}:predict", json={"instances": []}).status_code == 404
    lines = [line for line in oip_server.log.read_text().splitlines() if marker in line and "WARNING" in line]
    assert len(lines) == 3, lines
    assert "Traceback" not in oip_server.log.read_text()


def test_repository_extension_needs_the_token(oip_server: OipServer) -> None:
    url = f"{oip_server.url}/v2/repository/models/lead_score"
    assert httpx.post(f"{url}/unload").status_code == 401
    assert httpx.post(f"{url}/unload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    channel = grpc.insecure_channel(oip_server.grpc)
    stub = GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="lead_score"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert httpx.get(f"{oip_server.url}/v2/models/lead_score/ready").status_code == 200  # nothing happened

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{url}/unload", headers=auth).status_code == 200
    try:
        assert httpx.get(f"{oip_server.url}/v2/models/lead_score/ready").status_code == 503
        assert not stub.ModelReady(pb.ModelReadyRequest(name="lead_score")).ready
        assert httpx.post(f"{oip_server.url}/v2/models/lead_score/infer", json=v2_body("lead_score")).status_code == 503
        index = httpx.post(f"{oip_server.url}/v2/repository/index", headers=auth).json()
        assert {m["name"]: m["state"] for m in index}["lead_score"] == "UNAVAILABLE"
    finally:
        stub.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name="lead_score"),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
        )
        channel.close()
    assert httpx.get(f"{oip_server.url}/v2/models/lead_score/ready").status_code == 200
