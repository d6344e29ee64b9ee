"""Call a V2 gRPC server with ``tritonclient.grpc``, in its own process.

``tritonclient.grpc`` and ``kserve`` register the same ``inference.*`` protobuf symbols, which
cannot share one process; the tests run this script and read its JSON answer from stdout.
Usage: ``python -m tests.triton_grpc_call HOST:PORT MODEL REQUEST.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

NUMPY = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


def call(address: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    client = triton_grpc.InferenceServerClient(address)
    inputs = []
    for t in body["inputs"]:
        values = np.array(t["data"], dtype=NUMPY[t["datatype"]])
        tensor = triton_grpc.InferInput(t["name"], list(values.shape), t["datatype"])
        tensor.set_data_from_numpy(values)  # tritonclient always sends raw_input_contents
        inputs.append(tensor)
    result = client.infer(name, inputs, model_version="1")
    outputs = {}
    for o in result.get_response(as_json=True)["outputs"]:
        values = result.as_numpy(o["name"]).ravel().tolist()
        outputs[o["name"]] = [v.decode() if isinstance(v, bytes) else v for v in values]

    def error(call: Any) -> str:
        try:
            call()
        except InferenceServerException as exc:
            return str(exc)
        return ""

    return {
        "outputs": outputs,
        "model_version": result.get_response().model_version,
        "live": client.is_server_live(),
        "ready": client.is_server_ready() and client.is_model_ready(name, "1"),
        "versions": client.get_model_metadata(name, as_json=True).get("versions"),
        "server": client.get_server_metadata(as_json=True).get("name"),
        "wrong_version_ready": error(lambda: client.is_model_ready(name, "2")),
        "wrong_version_infer": error(lambda: client.infer(name, inputs, model_version="7")),
    }


if __name__ == "__main__":
    address, model, request = sys.argv[1:4]
    with open(request) as f:
        print(json.dumps(call(address, model, json.load(f))))
