"""Adaptive micro-batching: concurrent requests share runtime calls and get exactly the answers
they get alone, for every model and both runtimes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from predictors.protocol.errors import ServingError
from predictors.protocol.tensors import Tensor
from predictors.runtime.registry import model_names, predictor_class
from predictors.runtime.spec_model import SpecModel
from predictors.settings import ServingSettings
from tests.helpers import v2_body


def requests(name: str, count: int) -> list[list[Tensor]]:
    """``count`` requests of 1 to 3 rows each, all different."""
    out = []
    for i in range(count):
        body = v2_body(name, rows=1 + i % 3, seed=100 + i)
        out.append([Tensor(t["name"], t["datatype"], tuple(t["shape"]), t["data"]) for t in body["inputs"]])
    return out


async def answer_all(model: SpecModel, batch: list[list[Tensor]]) -> list[list[tuple[str, str, np.ndarray]]]:
    return await asyncio.gather(*(model.infer(tensors, [], f"r{i}") for i, tensors in enumerate(batch)))


@pytest.mark.parametrize(("name", "use_onnx"), [*((name, True) for name in model_names()), ("credit_risk", False)])
def test_batched_answers_equal_unbatched(model_dirs: dict[str, Path], name: str, use_onnx: bool) -> None:
    alone = predictor_class(name)(str(model_dirs[name]), settings=ServingSettings(use_onnx=use_onnx))
    batched = predictor_class(name)(
        str(model_dirs[name]), settings=ServingSettings(use_onnx=use_onnx, batching=True, batch_max_rows=16)
    )
    assert alone.load() and batched.load() and batched.batcher is not None
    work = requests(name, 40)
    expected = [asyncio.run(answer_all(alone, [tensors]))[0] for tensors in work]
    got = asyncio.run(answer_all(batched, work))
    for mine, theirs in zip(got, expected, strict=True):
        for (n1, d1, v1), (n2, d2, v2) in zip(mine, theirs, strict=True):
            assert (n1, d1) == (n2, d2) and v1.tolist() == v2.tolist()
    assert batched.batcher.batches < len(work) / 3  # concurrent requests shared runtime calls


def test_a_bad_request_does_not_spoil_the_batch(model_dirs: dict[str, Path]) -> None:
    model = predictor_class("credit_risk")(str(model_dirs["credit_risk"]), settings=ServingSettings(batching=True))
    assert model.load()
    good = requests("credit_risk", 3)
    bad = [Tensor("industry_segment", "BYTES", (1,), [42])]

    async def run() -> list[object]:
        calls = [model.infer(t, [], "good") for t in good] + [model.infer(bad, [], "bad")]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, list) for r in results[:3]) and isinstance(results[3], ServingError)


def test_a_rows_answer_does_not_depend_on_its_batch(model_dirs: dict[str, Path]) -> None:
    """ONNX Runtime's last-ulp differences between a row scored alone and in a batch never show:
    answers are rounded to significant digits (12 decimals of a forecast in the thousands were a
    few ulps, and about one answer in 150 changed)."""
    from feature_specs import Validator, load_spec
    from predictors.runtime.loading import load_model
    from predictors.runtime.scoring import Scorer, round_significant
    from tests.spec_data import rows as spec_rows

    spec = load_spec("stock_demand")
    loaded = load_model(str(model_dirs["stock_demand"]))
    scorer = Scorer(spec, loaded.pipeline, reference=loaded.reference)
    assert scorer.runtime == "onnxruntime"
    data = spec_rows("stock_demand", 2000, seed=6)
    columns = Validator(spec, 2000).columns(
        {
            name: data[name].to_numpy() if data[name].dtype.kind in "fi" else list(data[name])
            for name in spec.feature_names
        }
    )
    batched = scorer(columns)
    alone = np.concatenate([scorer({k: v[i : i + 1] for k, v in columns.items()}) for i in range(2000)])
    assert batched.tolist() == alone.tolist()
    assert round_significant(np.array([0.0, 1234.56789012345678, -0.000123456789012345, np.nan]), 12)[:3].tolist() == [
        0.0,
        1234.56789012,
        -0.000123456789012,
    ]
