"""The two baselines the serving benchmark measures ours against, served by the same ModelServer.

- ``stock``: the usual custom-model pattern — a plain ``kserve.Model`` whose ``predict`` calls the
  same fitted scikit-learn estimator on a prebuilt feature array (no validation at all).
- ``floor``: an empty ``kserve.Model`` answering a constant: the server's own cost (over REST,
  and over KServe's own gRPC servicer with ``--grpc_port``).
"""

from __future__ import annotations

import argparse

import pandas as pd
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from bench.serving import ROW
from feature_specs import Validator, load_spec
from predictors.loading import load_model


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["stock", "floor"], required=True)
    parser.add_argument("--model_name", default="credit_risk")
    parser.add_argument("--model_dir")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, help="also serve gRPC (KServe's servicer) on this port")
    args, _ = parser.parse_known_args()
    model = StockModel(args.model_name, args.model_dir) if args.kind == "stock" else FloorModel(args.model_name)
    grpc = {"enable_grpc": True, "grpc_port": args.grpc_port} if args.grpc_port else {"enable_grpc": False}
    ModelServer(http_port=args.http_port, **grpc).start([model])


if __name__ == "__main__":
    main()
