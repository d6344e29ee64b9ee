"""Open Inference Protocol (V2) tensors: JSON, raw bytes (REST binary extension, gRPC
``raw_input_contents``) and typed gRPC contents, all into one :class:`Tensor`.

Every malformed tensor is a :class:`~predictors.protocol.errors.ServingError` naming the field — never a 500.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import numpy as np

from predictors.protocol.errors import ServingError

#: OIP datatype -> little-endian numpy dtype of its raw bytes (BYTES is length-prefixed instead).
RAW_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
DATATYPES = frozenset(RAW_DTYPES) | {"BYTES"}


class Tensor(NamedTuple):  # a tuple: built in a fraction of a frozen dataclass's time (10 per request)
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any  # a list (JSON, typed contents) or a numpy array / list of bytes (raw)


def _field(value: Any, kind: Any, where: str, expected: str) -> None:
    if not isinstance(value, kind):
        raise ServingError(f"{where}: expected {expected}")


def check_header(name: Any, datatype: Any, shape: Any, where: str) -> tuple[str, str, tuple[int, ...]]:
    """Name, exact OIP datatype and a non-negative integer shape, or a 400 naming the field."""
    usual = type(name) is str and type(datatype) is str and datatype in DATATYPES and type(shape) is list
    usual = usual and len(shape) == 1
    if usual and type(shape[0]) is int and shape[0] >= 0:
        return name, datatype, (shape[0],)
    for field, value in (("name", name), ("datatype", datatype), ("shape", shape)):
        if value is None:
            raise ServingError(f"{where}.{field}: required")
    _field(name, str, f"{where}.name", "a string")
    _field(datatype, str, f"{name}.datatype", "a string")  # before the set lookup: a dict is unhashable
    if datatype not in DATATYPES:
        raise ServingError(f"{name}: unknown datatype {datatype!r}; the OIP names are {', '.join(sorted(DATATYPES))}")
    _field(shape, list | tuple, f"{name}.shape", "a list of integers")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ServingError(f"{name}.shape: expected non-negative integers, got {list(shape)}")
    return name, datatype, tuple(shape)


def elements(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def from_json(obj: Any, index: int) -> Tensor:
    """One ``inputs[i]`` object of a JSON inference request (data already parsed)."""
    if type(obj) is dict:  # the usual tensor, [N] of flat values, checked in one expression
        name, datatype, shape, data = obj.get("name"), obj.get("datatype"), obj.get("shape"), obj.get("data")
        if (
            type(name) is str
            and type(datatype) is str
            and datatype in DATATYPES
            and type(shape) is list
            and len(shape) == 1
            and type(data) is list
            and shape[0] == len(data)
            and type(shape[0]) is int
            and (not data or type(data[0]) is not list)
        ):
            return Tensor(name, datatype, (len(data),), data)
    if not isinstance(obj, dict):
        raise ServingError(f"inputs[{index}]: expected an object")
    name, datatype, shape = check_header(obj.get("name"), obj.get("datatype"), obj.get("shape"), f"inputs[{index}]")
    data = obj.get("data")
    if not isinstance(data, list):
        raise ServingError(f"{name}.data: expected a list of values")
    if data and isinstance(data[0], list):  # nested row-major form: flatten one level per dimension
        data = _flatten(data, name)
    if len(data) != elements(shape):
        raise ServingError(f"{name}: shape {list(shape)} does not match {len(data)} values")
    return Tensor(name, datatype, shape, data)


def _flatten(data: list[Any], name: str) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 32:
                    raise ServingError(f"{name}.data: nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> Tensor:
    """A tensor's raw little-endian bytes (binary extension, gRPC raw contents)."""
    count = elements(shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, split_bytes(name, raw, count))
    dtype = RAW_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ServingError(
            f"{name}: {len(raw)} bytes of binary data for shape {list(shape)} {datatype} "
            f"(expected {count * dtype.itemsize})"
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and values.view(np.uint8).max(initial=0) > 1:
        raise ServingError(f"{name}: BOOL binary data must be bytes 0 or 1")
    return Tensor(name, datatype, shape, values)


def split_bytes(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    """BYTES raw form: each element is a 4-byte little-endian length, then that many bytes."""
    view, out, at = memoryview(raw), [], 0
    while at < len(view):
        if at + 4 > len(view):
            raise ServingError(f"{name}: BYTES binary data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + size > len(view):
            raise ServingError(f"{name}: BYTES element of {size} bytes runs past the end of the data")
        out.append(bytes(view[at : at + size]))
        at += size
    if len(out) != count:
        raise ServingError(f"{name}: {len(out)} BYTES elements for {count} values in the shape")
    return out


def to_raw(datatype: str, values: np.ndarray) -> bytes:
    """An output's raw bytes (binary extension, gRPC raw output contents)."""
    if datatype == "BYTES":
        parts = [str(v).encode() for v in values.tolist()]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(values, dtype=RAW_DTYPES[datatype]).tobytes()
