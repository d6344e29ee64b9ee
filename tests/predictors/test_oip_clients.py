"""The official Open Inference Protocol clients against a real ModelServer, over REST and gRPC:
``tritonclient.http`` (JSON and binary tensors), ``tritonclient.grpc`` (raw contents) and KServe's
own ``InferenceRESTClient`` / ``InferenceGRPCClient`` (typed and raw contents). Every answer
must equal the plain JSON REST answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

from predictors.runtime.registry import model_names
from tests.helpers import v2_body
from tests.oip_server import OipServer

pytestmark = pytest.mark.integration
MODELS = list(model_names())
ROOT = Path(__file__).resolve().parents[2]
NUMPY = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


def arrays(name: str) -> dict[str, tuple[str, np.ndarray]]:
    return {
        t["name"]: (t["datatype"], np.array(t["data"], dtype=NUMPY[t["datatype"]])) for t in v2_body(name)["inputs"]
    }


def reference(server: OipServer, name: str) -> dict[str, list[Any]]:
    """The plain JSON REST answer, output name -> values."""
    response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=v2_body(name))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "parameters" not in body and body["model_version"] == "1"
    return {o["name"]: o["data"] for o in body["outputs"]}


def same(values: np.ndarray, expected: list[Any]) -> bool:
    got = [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]
    return got == expected


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_json_and_binary(oip_server: OipServer, name: str, binary: bool) -> None:
    expected = reference(oip_server, name)
    client = triton_http.InferenceServerClient(oip_server.url.removeprefix("http://"))
    inputs = []
    for feature, (datatype, values) in arrays(name).items():
        tensor = triton_http.InferInput(feature, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton_http.InferRequestedOutput(o, binary_data=binary) for o in expected]
    result = client.infer(name, inputs, outputs=outputs, model_version="1")
    for output, values in expected.items():
        assert same(result.as_numpy(output), values), output
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_metadata_and_readiness(oip_server: OipServer, name: str) -> None:
    client = triton_http.InferenceServerClient(oip_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, model_version="1")
    assert not client.is_model_ready(name, model_version="2")
    meta = client.get_model_metadata(name, model_version="1")
    assert meta["versions"] == ["1"] and {i["name"] for i in meta["inputs"]} == set(arrays(name))
    assert client.get_server_metadata()["name"]
    with pytest.raises(InferenceServerException, match="no version 2"):
        client.get_model_metadata(name, model_version="2")


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_grpc_raw_contents(oip_server: OipServer, name: str, tmp_path: Path) -> None:
    expected = reference(oip_server, name)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(v2_body(name)))
    cmd = [sys.executable, "-m", "tests.triton_grpc_call", oip_server.grpc, name, str(request)]
    answer = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    assert answer["outputs"] == expected and answer["model_version"] == "1"
    assert answer["live"] and answer["ready"] and answer["server"]
    assert answer["versions"] == ["1"]  # as over REST
    assert "no version 2" in answer["wrong_version_ready"] and "no version 7" in answer["wrong_version_infer"]


def kserve_request(name: str, binary: bool) -> InferRequest:
    inputs = []
    for feature, (datatype, values) in arrays(name).items():
        tensor = InferInput(feature, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model_name=name, infer_inputs=inputs, request_id="kserve-client")


def kserve_values(output: Any) -> list[Any]:
    values = output.as_numpy() if hasattr(output, "as_numpy") else np.array(output.data)
    return [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_kserve_rest_and_grpc_clients(oip_server: OipServer, name: str, binary: bool) -> None:
    expected = reference(oip_server, name)

    async def call() -> None:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1))
        grpc_client = InferenceGRPCClient(oip_server.grpc, retries=2)
        try:
            assert await rest.is_server_ready(oip_server.url) and await rest.is_model_ready(oip_server.url, name)
            assert await grpc_client.is_server_ready() and await grpc_client.is_model_ready(name)
            over_rest = await rest.infer(oip_server.url, kserve_request(name, binary), model_name=name)
            over_grpc = await grpc_client.infer(kserve_request(name, binary))
            assert over_grpc.model_version == "1" and over_rest.model_name == name  # REST: the client drops the version
            for response in (over_rest, over_grpc):
                assert {o.name: kserve_values(o) for o in response.outputs} == expected
        finally:
            await rest.close()
            await grpc_client.close()

    asyncio.run(call())
