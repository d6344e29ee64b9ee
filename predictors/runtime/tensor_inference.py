"""The V2 tensor path into a model: decoded input tensors (REST JSON, binary extension, gRPC raw or
typed contents) -> a validated batch, checked against the model's validator and outputs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from kserve import InferRequest

from feature_specs import InvalidFeature, Validator
from predictors.protocol.tensors import Tensor
from predictors.runtime.request_batch import RequestBatch


def batch_from_v2(validator: Validator, output_names: Sequence[str], request: InferRequest) -> RequestBatch:
    tensors = [Tensor(t.name, t.datatype, tuple(t.shape), t.data if t.data is not None else []) for t in request.inputs]
    wanted = tuple(o.name for o in request.request_outputs or ())
    return batch_from_tensors(validator, output_names, tensors, wanted, request.id or uuid.uuid4().hex)


def batch_from_tensors(
    validator: Validator, output_names: Sequence[str], inputs: Sequence[Tensor], wanted: Sequence[str], request_id: str
) -> RequestBatch:
    """Decoded V2 input tensors -> a validated batch (raises InvalidFeature naming the field)."""
    columns: dict[str, Any] = {}
    for name, datatype, shape, data in inputs:
        if name in columns:
            raise InvalidFeature(name, "given twice")
        validator.check_datatype(name, datatype)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidFeature(name, f"shape {list(shape)} not supported; expected [N] or [N, 1]")
        if len(data) != shape[0]:
            raise InvalidFeature(name, f"shape {list(shape)} does not match {len(data)} values")
        if (
            type(data) is not list
            and isinstance(data, np.ndarray)
            and data.dtype.kind == "f"
            and not np.isfinite(data).all()
        ):
            raise InvalidFeature(name, "binary data holds NaN or infinity; every value must be finite")
        columns[name] = data
    if not columns:
        raise InvalidFeature("inputs", "no input tensors; expected one per feature")
    validated = validator.columns(columns)
    rows = len(next(iter(validated.values())))
    for name in wanted:
        if name not in output_names:
            raise InvalidFeature("outputs", f"unknown output {name!r}; this model returns {list(output_names)}")
    return RequestBatch(validated, rows, "v2", request_id, outputs=tuple(wanted))
