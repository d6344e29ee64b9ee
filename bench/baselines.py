"""The two baselines the serving benchmark measures ours against, served by the same ModelServer.

- ``stock``: the usual custom-model pattern — a plain ``kserve.Model`` whose ``predict`` calls the
  same fitted scikit-learn estimator on a prebuilt feature array (no validation at all).
- ``floor``: an empty ``kserve.Model`` answering a constant: the server's own cost (over REST,
  and over KServe's own gRPC servicer with ``--grpc_port``).
- ``grpcio``: a bare grpcio asyncio servicer answering a constant, without KServe: what any
  Python gRPC server built on grpcio costs per call, before it does anything.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pandas as pd
from grpc import aio
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

from bench.serving import ROW
from feature_specs import Validator, load_spec
from predictors.runtime.loading import load_model


class StockModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        spec = load_spec(name)
        pipeline = load_model(model_dir).pipeline
        row = Validator(spec).columns({name: [value] for name, (_, value) in ROW.items()})  # the benchmark's row
        self.estimator = pipeline[-1]
        self.array = pipeline[0].transform(pd.DataFrame(row))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["stock", "floor", "grpcio"], required=True)
    parser.add_argument("--model_name", default="credit_risk")
    parser.add_argument("--model_dir")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, help="also serve gRPC (KServe's servicer) on this port")
    args, _ = parser.parse_known_args()
    if args.kind == "grpcio":
        asyncio.run(serve_bare_grpc(args.grpc_port))
        return
    model = StockModel(args.model_name, args.model_dir) if args.kind == "stock" else FloorModel(args.model_name)
    grpc = {"enable_grpc": True, "grpc_port": args.grpc_port} if args.grpc_port else {"enable_grpc": False}
    ModelServer(http_port=args.http_port, **grpc).start([model])


if __name__ == "__main__":
    main()
