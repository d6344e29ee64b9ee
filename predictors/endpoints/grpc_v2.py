"""The V2 (Open Inference Protocol) gRPC service, served by the platform itself.

KServe 0.21's servicer reads only typed ``contents`` (``tritonclient.grpc`` sends
``raw_input_contents``), lists no versions in ``ModelMetadata`` and ignores ``model_version``.
This one decodes both forms through the same validation as REST, answers in the form it was asked
in (raw or typed), and locks the repository extension down like REST (:mod:`predictors.endpoints.admin`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from grpc import aio
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from predictors.endpoints.admin import Admin
from predictors.endpoints.rest_v2 import find_model, metadata
from predictors.protocol.errors import ServingError
from predictors.protocol.tensors import Tensor, check_header, elements, from_raw, to_raw
from predictors.runtime.request_batch import Output

logger = logging.getLogger(__name__)

#: OIP datatype -> the typed field of ``InferTensorContents`` that carries it.
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: A ServingError's HTTP status -> its gRPC code (any other status: INVALID_ARGUMENT).
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def decode_inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServingError(f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = check_header(tensor.name, tensor.datatype, list(tensor.shape), f"inputs[{i}]")
        if raw:
            if tensor.HasField("contents"):
                raise ServingError(f"{name}: contents and raw_input_contents are both given")
            tensors.append(from_raw(name, datatype, shape, raw[i]))
            continue
        if datatype not in TYPED_FIELD:
            raise ServingError(f"{name}: {datatype} travels only in raw_input_contents")
        data = list(getattr(tensor.contents, TYPED_FIELD[datatype]))
        if len(data) != elements(shape):
            raise ServingError(f"{name}: shape {list(shape)} does not match {len(data)} values")
        tensors.append(Tensor(name, datatype, shape, data))
    return tensors


def encode_outputs(response: pb.ModelInferResponse, outputs: list[Output], raw: bool) -> None:
    for name, datatype, values in outputs:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
        if raw:
            response.raw_output_contents.append(to_raw(datatype, values))
        else:
            typed = values.tolist()
            if datatype == "BYTES":
                typed = [v if isinstance(v, bytes) else str(v).encode() for v in typed]
            getattr(tensor.contents, TYPED_FIELD[datatype]).extend(typed)


class Servicer(InferenceServicer):
    """Server live/ready/metadata from KServe; model routes and the repository are ours."""

    def __init__(self, dataplane: DataPlane, repository: ModelRepository, admin: Admin) -> None:
        super().__init__(dataplane, ModelRepositoryExtension(repository))
        self.repository, self.admin = repository, admin

    async def _fail(self, context: aio.ServicerContext, exc: ServingError, what: str) -> Any:
        """The one place a ServingError becomes a gRPC status (one WARNING line, as over HTTP)."""
        code = GRPC_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        logger.warning("grpc %s -> %s: %s", what, code.name, exc.message)
        await context.abort(code, exc.message)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            model = find_model(self.repository, request.name, request.version or None)
        except ServingError as exc:
            return await self._fail(context, exc, "ModelMetadata")
        return pb.ModelMetadataResponse(**metadata(model))

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            model = find_model(self.repository, request.name, request.version or None)
        except ServingError as exc:
            return await self._fail(context, exc, "ModelReady")
        return pb.ModelReadyResponse(ready=bool(model.ready))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            model = find_model(self.repository, request.model_name, request.model_version or None)
            tensors = decode_inputs(request)
            request_id = request.id or uuid.uuid4().hex
            outputs = await model.infer(tensors, [o.name for o in request.outputs], request_id)
        except ServingError as exc:
            return await self._fail(context, exc, "ModelInfer")
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version or "", id=request_id)
        encode_outputs(response, outputs, raw=bool(request.raw_input_contents))
        return response

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            self.admin.authorize(_authorization(context))
            await self.admin.load(request.model_name)
        except ServingError as exc:
            return await self._fail(context, exc, "RepositoryModelLoad")
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            self.admin.authorize(_authorization(context))
            self.admin.unload(request.model_name)
        except ServingError as exc:
            return await self._fail(context, exc, "RepositoryModelUnload")
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)


def _authorization(context: Any) -> str | None:
    return dict(context.invocation_metadata() or ()).get("authorization")


class GrpcServer:
    """An asyncio gRPC server beside the ModelServer's REST server, in the same event loop."""

    def __init__(self, port: int, servicer: Servicer, max_message_bytes: int) -> None:
        self.port, self.servicer, self.max_message_bytes = port, servicer, max_message_bytes
        self._server: aio.Server | None = None

    async def serve(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        self._server = aio.server(options=options)
        add_GRPCInferenceServiceServicer_to_server(self.servicer, self._server)
        self._server.add_insecure_port(f"[::]:{self.port}")
        await self._server.start()
        logger.info("gRPC (V2) on port %d", self.port)
        await self._server.wait_for_termination()

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
