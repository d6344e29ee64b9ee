"""The V2 tensor path of :class:`predictors.base.SpecModel`: decoded input tensors (REST JSON,
binary extension, gRPC raw or typed contents) -> validated batch -> named outputs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from kserve import InferRequest
from kserve.metrics import PREDICT_HIST_TIME

from feature_specs import InvalidFeature
from predictors import metrics
from predictors.errors import ServingError, refused
from predictors.tensors import Tensor

if TYPE_CHECKING:
    from predictors.base import Batch, Output, SpecModel


def batch_from_v2(model: SpecModel, request: InferRequest) -> Batch:
    tensors = [Tensor(t.name, t.datatype, tuple(t.shape), t.data if t.data is not None else []) for t in request.inputs]
    wanted = tuple(o.name for o in request.request_outputs or ())
    return batch_from_tensors(model, tensors, wanted, request.id or uuid.uuid4().hex)


def batch_from_tensors(model: SpecModel, inputs: Sequence[Tensor], wanted: Sequence[str], request_id: str) -> Batch:
    """Decoded V2 input tensors -> a validated batch (raises InvalidFeature naming the field)."""
    columns: dict[str, Any] = {}
    for tensor in inputs:
        if tensor.name in columns:
            raise InvalidFeature(tensor.name, "given twice")
        model.validator.check_datatype(tensor.name, tensor.datatype)
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidFeature(tensor.name, f"shape {list(shape)} not supported; expected [N] or [N, 1]")
        data = tensor.data
        if len(data) != shape[0]:
            raise InvalidFeature(tensor.name, f"shape {list(shape)} does not match {len(data)} values")
        if isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all():
            raise InvalidFeature(tensor.name, "binary data holds NaN or infinity; every value must be finite")
        columns[tensor.name] = data
    if not columns:
        raise InvalidFeature("inputs", "no input tensors; expected one per feature")
    validated = model.validator.columns(columns)
    rows = len(next(iter(validated.values())))
    for name in wanted:
        if name not in model.output_names:
            raise InvalidFeature("outputs", f"unknown output {name!r}; this model returns {model.output_names}")
    from predictors.base import Batch

    return Batch(validated, rows, "v2", request_id, outputs=tuple(wanted))


async def infer(model: SpecModel, inputs: Sequence[Tensor], wanted: Sequence[str], request_id: str) -> list[Output]:
    """The V2 path of the platform's own REST and gRPC routes: validate, score, name the
    outputs (only those asked for). A client mistake raises :class:`ServingError`."""
    with metrics.counted(model.name, model.version or "", "v2", ServingError):
        if not model.ready or model.scorer is None:
            raise ServingError(f"model {model.name} is not ready", status=503)
        try:
            batch = batch_from_tensors(model, inputs, wanted, request_id)
        except InvalidFeature as exc:
            raise refused(model.name, exc) from None
        started = time.perf_counter()
        await model.predict(batch)
        PREDICT_HIST_TIME.labels(model.name).observe(time.perf_counter() - started)  # as KServe's own path
        outputs = model._answer(batch)
        return [o for o in outputs if o[0] in batch.outputs] if batch.outputs else outputs
