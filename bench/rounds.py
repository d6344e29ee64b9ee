"""What the serving benchmark sends and how it times it: the 1-row V2 request (REST and gRPC),
wrk runs at 8 connections and 1, and rounds that interleave the runs being compared."""

from __future__ import annotations

import base64
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.load import time_each, wrk
from bench.row import ROW

MODEL = "credit_risk"


def v2_body() -> str:
    inputs = [{"name": k, "shape": [1], "datatype": t, "data": [v]} for k, (t, v) in ROW.items()]
    # the baselines answer only the probability; ask ours for the same (V2 requested outputs)
    return json.dumps({"inputs": inputs, "outputs": [{"name": "probability"}]})


def grpc_request() -> str:
    """The benchmark row as a ModelInferRequest in protobuf JSON (typed contents)."""
    field = {"BYTES": "bytes_contents", "FP64": "fp64_contents", "INT64": "int64_contents", "BOOL": "bool_contents"}
    inputs = []
    for name, (datatype, value) in ROW.items():
        if datatype == "BYTES":
            value = base64.b64encode(str(value).encode()).decode()
        inputs.append({"name": name, "datatype": datatype, "shape": [1], "contents": {field[datatype]: [value]}})
    return json.dumps({"model_name": MODEL, "inputs": inputs, "outputs": [{"name": "probability"}]})


Figures = dict[str, float]


def rounds(runs: dict[str, Callable[[], Figures]], count: int) -> dict[str, Figures]:
    """Every run once per round, interleaved, so the machine's drift hits all of them alike; the
    median of each figure over the rounds."""
    samples: dict[str, list[Figures]] = {name: [] for name in runs}
    for _ in range(count):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: {k: statistics.median(s[k] for s in got) for k in got[0]} for name, got in samples.items()}


def post_script(path: Path, body: str) -> Path:
    """A wrk script POSTing ``body`` (JSON)."""
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n'
    )
    return path


def rest(
    url: str, script: Path, seconds: int, time_alone: bool = False, body: str | None = None
) -> Callable[[], Figures]:
    """Throughput at 8 connections and latency at 1 (wrk); with ``time_alone`` also the p99 of
    each request timed alone at 1 connection (no coordinated-omission correction). ``body``: what
    ``script`` sends, when it is not the benchmark's V2 request."""

    def run() -> Figures:
        throughput, latency = wrk(url, script, 8, seconds), wrk(url, script, 1, seconds)
        figures = {"rps": throughput["rps"], "p50": latency["p50"], "p99": latency["p99"]}
        if time_alone:
            figures["p99 alone"] = time_each(url, (body or v2_body()).encode(), seconds)["p99"]
        return figures

    return run


def show(name: str, result: Figures, connections: str = "8 conn") -> None:
    alone = f"   p99 {result['p99 alone']:6.3f} ms timed alone" if "p99 alone" in result else ""
    print(
        f"  {name:<10} {result['rps']:8.0f} req/s ({connections})   "
        f"p50 {result['p50']:6.3f} ms   p99 {result['p99']:6.3f} ms{alone}",
        flush=True,
    )
