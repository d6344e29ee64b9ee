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
_NUMERIC_V2 = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
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
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            values: Any = columns.get(f.name)
            if isinstance(values, pd.Series):  # a DataFrame is accepted as columns
                values = values.to_numpy()
            if values is None:
                if not f.optional:
                    raise InvalidFeature(f.name, "required feature is missing")
                values = [None] * n
            out[f.name] = self._category(f, values) if f.dtype == "category" else self._number(f, values)
        return out

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
        f = self._names.get(name)
        if f is None:
            raise InvalidFeature(name, f"unknown feature; expected one of {', '.join(self._names)}")
        ok = {
            "category": datatype == "BYTES",
            "bool": datatype == "BOOL",
        }.get(f.dtype, datatype in _NUMERIC_V2)
        if not ok:
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

    def _number(self, f: Feature, values: Sequence[Any]) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            arr = values.astype(np.float64)  # frames from storage: NaN marks a missing value
            missing = np.isnan(arr)
        else:
            allowed = {bool, np.bool_} if f.dtype == "bool" else _NUMBER_TYPES
            if f.dtype == "bool" and float in set(map(type, values)):  # NaN marks a missing bool in frames
                values = [None if _is_nan(v) else v for v in values]
            types = set(map(type, values))
            if not types <= allowed | {type(None)}:
                bad = next(v for v in values if type(v) not in allowed and v is not None)
                expected = "true or false" if f.dtype == "bool" else f"a number ({f.dtype})"
                raise InvalidFeature(f.name, f"expected {expected}, got {_type_name(bad)} {_show(bad)}")
            has_none = type(None) in types
            arr = np.asarray([math.nan if v is None else v for v in values] if has_none else values, dtype=np.float64)
            missing = np.fromiter((v is None for v in values), bool, len(values)) if has_none else None
        finite = np.isfinite(arr)
        if missing is not None:
            bad_rows = np.flatnonzero(~finite & ~missing)
            if bad_rows.size:
                raise InvalidFeature(f.name, f"value {arr[bad_rows[0]]} at row {bad_rows[0]} is not a finite number")
            if missing.any():
                if not f.optional:
                    raise InvalidFeature(
                        f.name, f"missing at row {int(np.flatnonzero(missing)[0])} but the feature is required"
                    )
                if f.impute != "median":
                    arr[missing] = float(f.impute)  # type: ignore[arg-type]
            present = arr[~missing]
        else:
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                raise InvalidFeature(f.name, f"value {arr[i]} at row {i} is not a finite number")
            present = arr
        if f.min is not None and (present < f.min).any():
            raise InvalidFeature(f.name, f"value {present[present < f.min][0]:g} is below the minimum {f.min:g}")
        if f.max is not None and (present > f.max).any():
            raise InvalidFeature(f.name, f"value {present[present > f.max][0]:g} is above the maximum {f.max:g}")
        if f.dtype == "int" and (present != np.floor(present)).any():
            raise InvalidFeature(f.name, f"expected an integer, got {present[present != np.floor(present)][0]:g}")
        return arr

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
