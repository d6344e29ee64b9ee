"""The V2 (Open Inference Protocol) model routes over REST, served by the platform itself.

KServe 0.21 answers 501 on versioned routes, puts ``"parameters": null`` into responses, takes a
JSON body without Content-Type for the binary extension and reads neither binary inputs nor
outputs correctly. These routes replace its model routes (metadata, readiness, infer; with and
without ``/versions/{v}``); they also skip its per-request pydantic round trips.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from kserve.model_repository import ModelRepository
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from predictors.protocol.errors import ServingError
from predictors.protocol.tensors import Tensor, check_header, from_json, from_raw, to_raw
from predictors.runtime.request_batch import Output
from predictors.runtime.spec_model import SpecModel

logger = logging.getLogger(__name__)

BINARY_HEADER = "inference-header-content-length"
_JSON = "application/json"
_BINARY = "application/octet-stream"


def find_model(repository: ModelRepository, name: str, version: str | None) -> SpecModel:
    """The served model, or a 404 naming what is served instead."""
    model = repository.get_model(name)
    if not isinstance(model, SpecModel):
        raise ServingError(f"model {name} not found; serving {', '.join(sorted(repository.get_models()))}", 404)
    if version is not None and version != model.version:
        served = f"version {model.version}" if model.version else "no version (not loaded)"
        raise ServingError(f"model {name} has no version {version}; it serves {served}", 404)
    return model


def metadata(model: SpecModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version] if model.version else [],
        "platform": "constructos-spec-model",
        "inputs": model.get_input_types(),
        "outputs": model.get_output_types(),
    }


def parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[Tensor]]:
    """A JSON inference request, or one with binary tensors after its JSON header."""
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length)
        except ValueError:
            raise ServingError(f"Inference-Header-Content-Length: not an integer: {header_length[:40]!r}") from None
        if not 0 < json_end <= len(body):
            raise ServingError(f"Inference-Header-Content-Length: {json_end} is outside the body of {len(body)} bytes")
    request = _loads(body if json_end == len(body) else body[:json_end])  # orjson is slow on memoryviews
    if not isinstance(request, dict):
        raise ServingError("body: expected a JSON object with 'inputs'")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ServingError("inputs: expected a non-empty list of input tensors")
    binary, at, tensors = memoryview(body)[json_end:], 0, []
    for i, obj in enumerate(inputs):
        if type(obj) is dict and "parameters" not in obj:  # JSON data: the usual request
            tensors.append(from_json(obj, i))
            continue
        size = _binary_size(obj)
        if size is None:
            tensors.append(from_json(obj, i))
            continue
        name, datatype, shape = check_header(obj.get("name"), obj.get("datatype"), obj.get("shape"), f"inputs[{i}]")
        if at + size > len(binary):
            raise ServingError(f"{name}: binary_data_size {size} runs past the end of the body")
        tensors.append(from_raw(name, datatype, shape, binary[at : at + size]))
        at += size
    if at != len(binary):
        raise ServingError(f"body: {len(binary) - at} bytes of binary data that no input claims")
    return request, tensors


def _loads(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        problem = str(exc)
    try:  # NaN / Infinity tokens and 1e999: parse them so validation names the field
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ServingError(f"body: not valid JSON ({problem})") from None


def _binary_size(obj: Any) -> int | None:
    params = obj.get("parameters") if isinstance(obj, dict) else None
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if type(size) is not int or size < 0:
        raise ServingError(f"inputs.parameters.binary_data_size: expected a non-negative integer, got {size!r}")
    return size


def requested_outputs(request: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Names asked for (empty: all) and which of them go back as binary data."""
    params = request.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ServingError("parameters: expected an object")
    all_binary = bool(params and params.get("binary_data_output") is True)
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list):
        raise ServingError("outputs: expected a list of {name}")
    names, binary = [], set()
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ServingError(f"outputs[{i}]: expected an object with a string 'name'")
        names.append(out["name"])
        flag = (out.get("parameters") or {}).get("binary_data") if isinstance(out.get("parameters"), dict) else None
        if flag is True or (flag is None and all_binary):
            binary.add(out["name"])
    return names, binary


class Answer(NamedTuple):
    """An encoded infer response: the body, its media type and extra headers."""

    body: bytes
    media_type: str
    headers: dict[str, str]


async def answer_infer(model: SpecModel, body: bytes, binary_header: str | None, request_id: str | None) -> Answer:
    """One infer request, parsed, scored and encoded (JSON, or binary outputs after a JSON header).
    ``request_id``: the ``x-request-id`` header, used when the body names no id."""
    payload, tensors = parse_request(body, binary_header)
    names, binary = requested_outputs(payload)
    request_id = payload.get("id") or request_id or uuid.uuid4().hex
    if not isinstance(request_id, str):
        raise ServingError("id: expected a string")
    outputs = await model.infer(tensors, names, request_id)
    params = payload.get("parameters") or {}
    all_binary = params.get("binary_data_output") is True and not payload.get("outputs")
    return encode_response(model, request_id, outputs, binary, all_binary)


def encode_response(
    model: SpecModel, request_id: str, outputs: list[Output], binary: set[str], all_binary: bool
) -> Answer:
    entries, chunks = [], []
    for name, datatype, values in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(values)]}
        if name in binary or all_binary:
            raw = to_raw(datatype, values)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            numeric = values.dtype.kind in "biuf" and values.flags.c_contiguous  # orjson writes those itself
            entry["data"] = values if numeric else values.tolist()
        entries.append(entry)
    answer = {"model_name": model.name, "model_version": model.version, "id": request_id, "outputs": entries}
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Answer(head, _JSON, {})
    return Answer(b"".join([head, *chunks]), _BINARY, {"Inference-Header-Content-Length": str(len(head))})


def v2_routes(repository: ModelRepository, server_metadata: Callable[[], dict[str, Any]]) -> list[Route]:
    def guarded(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        # a ServingError is answered by predictors.protocol.http_edges.serving_error
        async def endpoint(request: Request) -> Response:
            params = request.path_params
            return await handler(request, find_model(repository, params["model_name"], params.get("model_version")))

        return endpoint

    async def model_metadata(_: Request, model: SpecModel) -> Response:
        # REST only (gRPC's ModelMetadataResponse has no parameters): the runtime in use and its check
        runtime = {"runtime": model.scorer.runtime, "runtime_check": model.scorer.check} if model.scorer else {}
        return Response(orjson.dumps(metadata(model) | {"parameters": runtime}), media_type=_JSON)

    async def model_ready(_: Request, model: SpecModel) -> Response:
        if not model.ready:
            raise ServingError(f"model {model.name} is not ready", 503)
        return Response(orjson.dumps({"name": model.name, "ready": True}), media_type=_JSON)

    async def infer(request: Request, model: SpecModel) -> Response:
        headers = request.headers
        body, media_type, extra = await answer_infer(
            model, await request.body(), headers.get(BINARY_HEADER), headers.get("x-request-id")
        )
        return Response(body, media_type=media_type, headers=extra)

    async def server(_: Request) -> Response:  # OIP writes it "/v2/"; KServe serves only "/v2"
        return Response(orjson.dumps(server_metadata()), media_type=_JSON)

    base = "/v2/models/{model_name}"
    routes = [Route("/v2/", server, methods=["GET"])]
    for suffix in ("", "/versions/{model_version}"):
        routes += [
            Route(base + suffix, guarded(model_metadata), methods=["GET"]),
            Route(base + suffix + "/ready", guarded(model_ready), methods=["GET"]),
            Route(base + suffix + "/infer", guarded(infer), methods=["POST"]),
        ]
    return routes
