"""Check a batch of feature values against a spec and fill the constant imputations.

One code path for every door into a model: V2 tensors, V1 instances, query strings, Kafka
events and training snapshots all become ``{feature: column}`` and pass through
:meth:`Validator.columns`. Failures raise :class:`InvalidFeature` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from feature_specs.spec import Feature, FeatureSpec

_NUMBER_TYPES = {int, float, np.float64, np.float32, np.int64, np.int32}
_BOOL_TYPES = {bool, np.bool_}
_NUMERIC_V2 = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class InvalidFeature(ValueError):
    """A client mistake in one field; ``str()`` reads ``"<field>: <problem>"``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    return {str: "string", bool: "boolean", dict: "object", list: "array"}.get(type(value), type(value).__name__)


class Validator:
    """Validates columns for one spec. Build once per model; calls are cheap."""

    def __init__(self, spec: FeatureSpec, max_batch: int | None = None) -> None:
        self.spec = spec
        self.max_batch = max_batch or spec.max_batch
        self.features = spec.features
        self._names = {f.name: f for f in spec.features}
        self._aliases = {a: f.name for f in spec.features for a in f.aliases}
        self._categories = {f.name: frozenset(f.categories or ()) for f in spec.features}
        by_dtype = {"category": frozenset({"BYTES"}), "bool": frozenset({"BOOL"})}
        self._datatypes = {f.name: by_dtype.get(f.dtype, _NUMERIC_V2) for f in spec.features}
        # numeric features are checked together, as one (features x rows) matrix
        self._numeric = [f for f in spec.features if f.numeric]
        self._mins = np.array([[-np.inf if f.min is None else f.min] for f in self._numeric])
        self._maxs = np.array([[np.inf if f.max is None else f.max] for f in self._numeric])
        self._bounds = {f.name: (lo[0], hi[0]) for f, lo, hi in zip(self._numeric, self._mins, self._maxs, strict=True)}
        self._required = np.array([[not f.optional] for f in self._numeric])
        self._integer = np.array([[f.dtype == "int"] for f in self._numeric])
        constant = [f.optional and f.impute != "median" for f in self._numeric]
        self._constant = np.array([[c] for c in constant])
        fills = [float(f.impute) if c else np.nan for f, c in zip(self._numeric, constant, strict=True)]  # type: ignore[arg-type]
        self._fill = np.array([[x] for x in fills])

    # -- entry points -------------------------------------------------------------------

    def columns(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Validate ``{feature: values}``; returns arrays in spec order (float64 or object).

        Missing optional values become the spec's constant, or NaN where the imputation is
        learned (``median``) and left to the shared transform.
        """
        unknown = [k for k in columns if k not in self._names]
        if unknown:
            raise InvalidFeature(unknown[0], f"unknown feature; expected one of {', '.join(self._names)}")
        n = self._batch_size(columns)
        if n == 1 and len(columns) == len(self.features) and (row := self._clean_row(columns)) is not None:
            return row
        out: dict[str, np.ndarray] = {}
        numbers: list[Any] = []
        for f in self.features:
            values: Any = columns.get(f.name)
            if isinstance(values, pd.Series):  # a DataFrame is accepted as columns
                values = values.to_numpy()
            if values is None:
                if not f.optional:
                    raise InvalidFeature(f.name, "required feature is missing")
                values = [None] * n
            if f.dtype == "category":
                out[f.name] = self._category(f, values)
            else:
                numbers.append(self._number_column(f, values))
        if numbers:
            for f, row in zip(self._numeric, self._check_numbers(numbers), strict=True):
                out[f.name] = row
        return {f.name: out[f.name] for f in self.features}

    def frame(self, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
        """Validated columns as a DataFrame: the input of the shared transform."""
        return pd.DataFrame(self.columns(columns))

    def records(self, records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Validate row-shaped input (V1 ``instances``, event payloads)."""
        rows = list(records)
        if not all(isinstance(r, Mapping) for r in rows):
            raise InvalidFeature("instances", "every instance must be an object of feature: value")
        keys: dict[str, None] = {}
        for r in rows:
            keys.update(dict.fromkeys(r))
        return self.frame({k: [r.get(k) for r in rows] for k in keys})

    def query(self, params: Mapping[str, str]) -> pd.DataFrame:
        """One row from query-string parameters (feature names or aliases, text values)."""
        row: dict[str, list[Any]] = {}
        for key, text in params.items():
            name = self._aliases.get(key, key)
            if name in row:
                raise InvalidFeature(key, f"given twice (also as {name})")
            f = self._names.get(name)
            row[name] = [_parse_text(f, text) if f else text]
        return self.frame(row)

    def check_datatype(self, name: str, datatype: str) -> None:
        """A V2 input's declared datatype must fit the feature's dtype."""
        if datatype in self._datatypes.get(name, ()):
            return
        f = self._names.get(name)
        if f is None:
            raise InvalidFeature(name, f"unknown feature; expected one of {', '.join(self._names)}")
        raise InvalidFeature(name, f"datatype {datatype} does not fit; expected {f.v2_datatype}")

    # -- per column ---------------------------------------------------------------------

    def _batch_size(self, columns: Mapping[str, Sequence[Any]]) -> int:
        lengths = {}
        for name, values in columns.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise InvalidFeature(name, "expected a list of values")
            lengths[name] = len(values)
        sizes = set(lengths.values())
        if len(sizes) > 1:
            detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise InvalidFeature(min(lengths, key=lengths.__getitem__), f"inputs differ in length ({detail})")
        n = sizes.pop() if sizes else 0
        if n == 0:
            raise InvalidFeature(next(iter(columns), "inputs"), "empty batch: at least one row is needed")
        if n > self.max_batch:
            raise InvalidFeature("batch", f"{n} rows exceed the maximum of {self.max_batch}")
        return n

    def _clean_row(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray] | None:
        """One complete, valid row, checked value by value (for one row numpy's per-call cost is
        most of the work). Anything unusual returns None: the general path then names the problem."""
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            values = columns.get(f.name)
            if values is None or isinstance(values, pd.Series):
                return None
            v = values[0]
            if f.dtype == "category":
                if type(v) is bytes:
                    v = v.decode("utf-8", "replace")
                if type(v) is not str or (v not in self._categories[f.name] and not f.allow_unknown):
                    return None
                column = np.empty(1, dtype=object)
                column[0] = v
                out[f.name] = column
                continue
            if (type(v) not in _BOOL_TYPES) if f.dtype == "bool" else (type(v) not in _NUMBER_TYPES):
                return None
            x = float(v)
            low, high = self._bounds[f.name]
            if not low <= x <= high or (f.dtype == "int" and not x.is_integer()):  # NaN fails too
                return None
            out[f.name] = np.array([x])
        return out

    def _number_column(self, f: Feature, values: Any) -> Any:
        """Type-check one numeric column; returns numbers with NaN where a value is missing."""
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            return values  # frames from storage: NaN marks a missing value
        allowed = _BOOL_TYPES if f.dtype == "bool" else _NUMBER_TYPES
        types = set(map(type, values))
        if f.dtype == "bool" and float in types:  # NaN marks a missing bool in frames
            values = [None if _is_nan(v) else v for v in values]
            types = set(map(type, values))
        if not types <= allowed | {type(None)}:
            bad = next(v for v in values if type(v) not in allowed and v is not None)
            expected = "true or false" if f.dtype == "bool" else f"a number ({f.dtype})"
            raise InvalidFeature(f.name, f"expected {expected}, got {_type_name(bad)} {_show(bad)}")
        if float in types:
            for i, v in enumerate(values):
                if v != v:  # an explicit NaN is a bad value, not a missing one
                    raise InvalidFeature(f.name, f"value nan at row {i} is not a finite number")
        if type(None) in types:
            values = [math.nan if v is None else v for v in values]
        return values

    def _check_numbers(self, numbers: list[Any]) -> np.ndarray:
        """Range, finiteness, integrality and required-ness of all numeric features at once."""
        matrix = np.array(numbers, dtype=np.float64)
        missing = np.isnan(matrix)

        def fail(mask: np.ndarray, problem: str) -> None:
            if mask.any():
                k, i = np.argwhere(mask)[0]
                raise InvalidFeature(
                    self._numeric[k].name, problem.format(value=matrix[k, i], row=i, f=self._numeric[k])
                )

        if missing.any():
            fail(missing & self._required, "missing at row {row} but the feature is required")
            matrix = np.where(missing & self._constant, self._fill, matrix)
        with np.errstate(invalid="ignore"):
            fractional = self._integer & (matrix != np.floor(matrix)) & ~np.isnan(matrix)
            if (
                np.isinf(matrix) | (matrix < self._mins) | (matrix > self._maxs) | fractional
            ).any():  # one pass if all is well
                fail(np.isinf(matrix), "value {value} at row {row} is not a finite number")
                fail(matrix < self._mins, "value {value:g} is below the minimum {f.min:g}")
                fail(matrix > self._maxs, "value {value:g} is above the maximum {f.max:g}")
                fail(fractional, "expected an integer, got {value:g}")
        return matrix

    def _category(self, f: Feature, values: Sequence[Any]) -> np.ndarray:
        allowed = self._categories[f.name]
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if type(v) is bytes:
                v = v.decode("utf-8", "replace")
            if v is None or _is_nan(v):
                if not f.optional:
                    raise InvalidFeature(f.name, f"null at row {i} but the feature is required")
                v = f.impute
            elif type(v) is not str:
                raise InvalidFeature(f.name, f"expected a string category, got {_type_name(v)} {_show(v)}")
            elif v not in allowed and not f.allow_unknown:
                raise InvalidFeature(f.name, f"unknown category {_show(v)}; allowed: {', '.join(sorted(allowed))}")
            out[i] = v
        return out


def _is_nan(value: Any) -> bool:
    return type(value) is float and value != value


def _parse_text(f: Feature, text: str) -> Any:
    """Query-string text to the feature's type."""
    if f.dtype == "category":
        return text
    if f.dtype == "bool":
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise InvalidFeature(f.name, f"expected true or false, got {_show(text)}")
    try:
        return float(text) if f.dtype == "float" else int(float(text)) if float(text).is_integer() else float(text)
    except ValueError:
        raise InvalidFeature(f.name, f"expected a number ({f.dtype}), got {_show(text)}") from None
