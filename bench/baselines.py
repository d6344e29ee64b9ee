"""The two baselines the serving benchmark measures ours against, served by the same ModelServer.

- ``stock``: the usual custom-model pattern — a plain ``kserve.Model`` whose ``predict`` calls the
  same fitted scikit-learn estimator on a prebuilt feature array (no validation at all).
- ``floor``: an empty ``kserve.Model`` answering a constant: the server's own cost (over REST,
  and over KServe's own gRPC servicer with ``--grpc_port``).
- ``grpcio``: a bare grpcio asyncio servicer answering a constant, without KServe: what any
  Python gRPC server built on grpcio costs per call, before it does anything.
- ``limit``: the limit of a Python server on our stack: uvicorn (as KServe configures it) running
  a FastAPI app (KServe's framework) with a bare ASGI handler ahead of it, where ours has
  :class:`~predictors.fast_infer.FastInfer`, reading the request body as ours does and answering
  ours' own answer (``--answer_file``: same size) to the V2 infer path, without parsing or scoring.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from grpc import aio
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.row import estimator_and_row
from predictors.endpoints.fast_infer import INFER_PATH, Disconnected, read_body
from predictors.protocol.http_edges import send_body


class StockModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.estimator, self.array = estimator_and_row(name, model_dir)
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        probability = self.estimator.predict_proba(self.array)[:, 1]
        return InferResponse(
            payload.id or "0", self.name, [InferOutput("probability", [1], "FP64", probability.tolist())]
        )


class FloorModel(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        return InferResponse(payload.id or "0", self.name, [InferOutput("probability", [1], "FP64", [0.5])])


class BareServicer(GRPCInferenceServiceServicer):
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id or "0")
        response.outputs.add(name="probability", datatype="FP64", shape=[1]).contents.fp64_contents.append(0.5)
        return response


async def serve_bare_grpc(port: int) -> None:
    server = aio.server()
    add_GRPCInferenceServiceServicer_to_server(BareServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class ConstantInfer:
    """Answers ``POST /v2/models/{m}/infer`` with a constant, after reading the body."""

    def __init__(self, app: ASGIApp, answer: bytes) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not INFER_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            await read_body(receive)
        except Disconnected:
            return
        await send_body(send, 200, self.answer)


def serve_limit(port: int, model_name: str, answer: bytes) -> None:
    app = FastAPI()

    @app.get(f"/v2/models/{model_name}/ready")
    def ready() -> dict[str, Any]:
        return {"name": model_name, "ready": True}

    app.add_middleware(ConstantInfer, answer=answer)
    # KServe's RESTServer's uvicorn.Config (loop "auto": uvloop; http "auto": httptools), no access log
    config = uvicorn.Config(
        app, host="0.0.0.0", port=port, log_config=None, access_log=False, timeout_keep_alive=65, loop="auto"
    )
    uvicorn.Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["stock", "floor", "grpcio", "limit"], required=True)
    parser.add_argument("--model_name", default="credit_risk")
    parser.add_argument("--model_dir")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, help="also serve gRPC (KServe's servicer) on this port")
    parser.add_argument("--answer_file", type=Path, help="limit: the body it answers")
    args, _ = parser.parse_known_args()
    if args.kind == "limit":
        serve_limit(args.http_port, args.model_name, args.answer_file.read_bytes())
        return
    if args.kind == "grpcio":
        asyncio.run(serve_bare_grpc(args.grpc_port))
        return
    model = StockModel(args.model_name, args.model_dir) if args.kind == "stock" else FloorModel(args.model_name)
    grpc = {"enable_grpc": True, "grpc_port": args.grpc_port} if args.grpc_port else {"enable_grpc": False}
    ModelServer(http_port=args.http_port, **grpc).start([model])


if __name__ == "__main__":
    main()
