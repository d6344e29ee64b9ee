"""Row digests for the landing index: 64 bits that tell two versions of an event apart.

**Scheme 2 (every commit writes it), specified here and pinned by golden values in the tests:** a row's
digest is ``blake2b(encoding, digest_size=8)`` read as a *little-endian signed* 64-bit integer
(SQLite's ``INTEGER``). ``encoding`` is the concatenation of the row's landed values, in the
order ``occurred_at``, the spec's features in spec order, the target (``event_id`` is the key and
``landed_at`` differs per landing: neither is hashed). Each value is a tag byte and a payload,
chosen by the column's type in the landing schema (:attr:`pipelines.streaming.intake.validation.Intake.schema`):

* null: ``00``;
* bool: ``01``, then ``00`` or ``01``;
* int: ``02``, then 8 bytes, two's complement, big-endian;
* float: ``03``, then IEEE-754 binary64, big-endian (``-0.0`` as ``0.0``, every NaN as
  ``7ff8000000000000``);
* string: ``04``, then its UTF-8 length as 4 bytes big-endian, then its UTF-8 bytes.

The tags and lengths make the encoding injective for a fixed column list. Values are hashed as
landed, after validation and typing, so ``3`` and ``3.0`` for an int feature, or a re-ordered
JSON object, digest alike.

**Scheme 1 (legacy)** is ``pandas.util.hash_array`` per column folded with FNV: what indexes
written before scheme 2 hold. pandas does not promise it stable across versions, so it is only
*read*: an id landed under it is compared by recomputing the newcomer's legacy digest
(:func:`legacy_digests`, pinned by a golden test that a pandas upgrade would fail).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

LEGACY: Final = 1  # pandas hash_array, FNV-folded: read only
BLAKE2B: Final = 2  # the specified scheme above: every new commit
SIZE: Final = 8  # digest bytes

_NULL = pa.scalar(b"\x00", pa.binary())
_BOOL, _INT, _FLOAT, _STRING = 1, 2, 3, 4
_FNV_PRIME, _LEGACY_NULL = np.uint64(1099511628211), np.uint64(0x9E3779B97F4A7C15)


class Legacy(int):
    """A digest an index recorded under scheme 1 (compare it with :func:`legacy_digests`)."""


def row_digests(table: pa.Table, columns: Sequence[str]) -> list[int]:
    """Scheme 2: the digest of each row of ``table`` over ``columns`` (in that order)."""
    if table.num_rows == 0:
        return []
    rows = pc.binary_join_element_wise(*(canonical_encoding(table.column(c).combine_chunks()) for c in columns), b"")
    _, offsets, data = rows.buffers()
    bounds = np.frombuffer(offsets, np.int32, len(rows) + 1, rows.offset * 4).tolist()
    raw = data.to_pybytes()  # slicing bytes beats a memoryview for short rows
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(raw[a:b], digest_size=SIZE).digest() for a, b in itertools.pairwise(bounds)])
    return list(np.frombuffer(digests, "<i8").tolist())


def canonical_encoding(column: pa.Array) -> pa.Array:
    """Each value of ``column`` in the canonical encoding (a binary array, one value per row)."""
    n, kind = len(column), column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        lengths = pc.binary_length(column).fill_null(0).to_numpy().astype(">u4")
        encoded = pc.binary_join_element_wise(_tagged(_STRING, lengths), column.cast(pa.binary()), b"")
    elif pa.types.is_boolean(kind):
        encoded = _tagged(_BOOL, column.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8))
    elif pa.types.is_integer(kind):
        encoded = _tagged(_INT, column.fill_null(0).to_numpy().astype(">i8"))
    elif pa.types.is_floating(kind):
        x = column.cast(pa.float64()).fill_null(0.0).to_numpy() + 0.0  # adding 0.0 turns -0.0 into 0.0
        x[np.isnan(x)] = np.nan  # numpy's NaN is the quiet 7ff8000000000000
        encoded = _tagged(_FLOAT, x.astype(">f8"))
    else:
        raise TypeError(f"no canonical encoding for a {kind} column")
    if column.null_count:
        encoded = pc.if_else(column.is_valid(), encoded, _NULL)
    assert len(encoded) == n
    return encoded


def _tagged(tag: int, payload: np.ndarray) -> pa.Array:
    """A binary array of ``tag`` followed by each element's bytes (fixed width)."""
    n = len(payload)
    width = payload.dtype.itemsize + 1
    rows = np.empty((n, width), np.uint8)
    rows[:, 0] = tag
    rows[:, 1:] = payload.view(np.uint8).reshape(n, width - 1)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(rows)]).cast(pa.binary())


def legacy_digests(table: pa.Table, columns: Sequence[str]) -> list[int]:
    """Scheme 1, as indexes written before scheme 2 hold it (pandas 2.x ``hash_array``)."""
    acc = np.zeros(table.num_rows, dtype=np.uint64)
    for name in columns:
        column = table.column(name).combine_chunks()
        if pa.types.is_string(column.type):  # each distinct string once
            encoded = pc.dictionary_encode(column)
            distinct = pd.util.hash_array(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
            codes = encoded.indices.fill_null(-1).to_numpy()
            hashed = np.where(codes >= 0, distinct[np.maximum(codes, 0)] if len(distinct) else 0, _LEGACY_NULL)
        else:  # numbers and booleans as float64; null is NaN
            hashed = pd.util.hash_array(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
        acc = (acc * _FNV_PRIME) ^ hashed.astype(np.uint64)
    return list(acc.view(np.int64).tolist())
