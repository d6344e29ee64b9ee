"""Check a row against a model's contract (the JSON Schema of ``GET /api/v1/models/<m>/contract``)
before sending it: the same rules the server applies, with messages that name the field."""

from __future__ import annotations

import math
from typing import Any

from constructos_client.errors import InvalidRow

_PY = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,)}


def check_row(contract: dict[str, Any], row: dict[str, Any], model: str | None = None) -> None:
    """Raise :class:`InvalidRow` naming the first field that breaks ``contract``."""
    properties: dict[str, Any] = contract.get("properties", {})
    for name in contract.get("required", []):
        if row.get(name) is None:
            raise InvalidRow(f"{name}: required feature is missing", None, model)
    if contract.get("additionalProperties") is False:
        unknown = sorted(set(row) - set(properties))
        if unknown:
            pii = set(contract.get("x-pii-refused", []))
            what = "personal data the platform refuses" if pii & set(unknown) else "not a feature of the model"
            raise InvalidRow(f"{unknown[0]}: {what}", None, model)
    for name, value in row.items():
        schema = properties.get(name)
        if schema is None or (value is None and _nullable(schema)):
            continue
        _check_value(name, schema, value, model)


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return isinstance(kind, list) and "null" in kind


def _check_value(name: str, schema: dict[str, Any], value: Any, model: str | None) -> None:
    kinds = [k for k in (schema["type"] if isinstance(schema.get("type"), list) else [schema.get("type")]) if k]
    kinds = [k for k in kinds if k != "null"]
    ok = any(isinstance(value, _PY.get(k, object)) and not (k != "boolean" and isinstance(value, bool)) for k in kinds)
    if kinds and not ok:
        raise InvalidRow(f"{name}: expected {' or '.join(kinds)}, got {type(value).__name__}", None, model)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRow(f"{name}: value {value} is not finite", None, model)
    if "enum" in schema and value not in schema["enum"]:
        known = ", ".join(str(v) for v in schema["enum"] if v is not None)
        raise InvalidRow(f"{name}: unknown category {value!r} (known: {known})", None, model)
    if "minimum" in schema and value < schema["minimum"]:
        raise InvalidRow(f"{name}: value {value:g} is below the minimum {schema['minimum']:g}", None, model)
    if "maximum" in schema and value > schema["maximum"]:
        raise InvalidRow(f"{name}: value {value:g} is above the maximum {schema['maximum']:g}", None, model)
