"""From raw Kafka values to landable rows: decode, check against the feature spec, split good from bad.

Policy (the trigger applies it to every record of a model's ``source_topic``):

* An event is one JSON object: ``event_id`` (string), ``occurred_at`` (ISO-8601), the spec's
  features, its target, and optionally the spec's PII fields.
* PII fields named in the spec are **stripped**: they are never validated, landed or logged.
* Any other field that is not in the spec is **refused** (the event goes to the DLQ): an
  unexpected field may be personal data that nobody declared, so it is not silently stored. Its
  *name* may be a personal value too: the reject names the fixed label ``unknown_field`` and the
  names' digests (:func:`name_digest`), never a name.
* **Strict input:** a JSON object with a duplicate key is refused (which value would count is
  ambiguous); ``event_id`` must be a printable string of 1 to :data:`MAX_EVENT_ID` characters
  (no control characters, no line breaks).
* Features are checked with the spec's :class:`~feature_specs.Validator` (types, ranges,
  categories, required/optional); the target is checked here (a boolean for classifiers, a
  finite number within the target's bounds for regression).
* Good events are landed with their values as sent (a null stays null: training imputes).
* Hostile input is an ordinary reject, never an exception: JSON nested deeper than the decoder
  can follow, or a string holding a lone UTF-16 surrogate (``"\\ud800"``, a valid JSON escape
  that no UTF-8 store can hold), is refused naming the field.

A batch is validated in one call; only when it fails is it bisected, so a bad event costs
``O(log n)`` extra calls instead of validating every record alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from feature_specs import FeatureSpec, InvalidFeature, Validator
from pipelines.streaming.intake.digests import legacy_digests, row_digests

ENVELOPE = ("event_id", "occurred_at")
MAX_EVENT_ID = 200
UNKNOWN_FIELD = "unknown_field"  # the reject's field for a name the spec does not know (never the name)
_KEY_END = re.compile(rb'"\s*:')  # ends every key of a JSON object (and may end some strings)
_decode = json.JSONDecoder().decode  # on str: twice as fast as json.loads on bytes
_ARROW = {"float": pa.float64(), "int": pa.int64(), "category": pa.string(), "bool": pa.bool_()}


@dataclass(frozen=True)
class Reject:
    index: int  # position in the batch given to :meth:`Intake.split`
    field: str
    reason: str


class Intake:
    """Checks raw events of one model; build once per model."""

    def __init__(self, spec: FeatureSpec, max_event_bytes: int) -> None:
        self.spec = spec
        self.max_event_bytes = max_event_bytes
        self.validator = Validator(spec, max_batch=1 << 31)
        self._known = frozenset((*ENVELOPE, *spec.feature_names, spec.target.name, *spec.pii_names))
        self._fields = self._known | {"event"}  # what a reject may name
        self._landed = ("occurred_at", *spec.feature_names, spec.target.name)
        self.schema = pa.schema(
            [("event_id", pa.string()), ("occurred_at", pa.string()), ("landed_at", pa.string())]
            + [(f.name, _ARROW[f.dtype]) for f in spec.features]
            + [(spec.target.name, pa.bool_() if spec.is_classifier else pa.float64())]
        )

    def split(self, values: Sequence[bytes | None]) -> tuple[list[tuple[int, dict[str, Any]]], list[Reject]]:
        """Good events (with their batch index) and the rejects with a reason."""
        good, rejects, _ = self._split(values)
        return good, rejects

    def split_table(
        self, values: Sequence[bytes | None], landed_at: str
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[Reject], pa.Table]:
        """:meth:`split`, and the good events' :meth:`table` (built from the columns that were validated)."""
        good, rejects, columns = self._split(values)
        return good, rejects, self.table([event for _, event in good], landed_at, columns)

    def _split(
        self, values: Sequence[bytes | None]
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[Reject], dict[str, list[Any]] | None]:
        """:meth:`split` and the good events' feature columns (None when the validator refused some)."""
        candidates: list[tuple[int, dict[str, Any]]] = []
        rejects: list[Reject] = []
        for i, raw in enumerate(values):
            try:
                candidates.append((i, self._envelope(raw)))
            except InvalidFeature as exc:
                rejects.append(Reject(i, exc.field if exc.field in self._fields else UNKNOWN_FIELD, exc.problem))
            except RecursionError:  # a deeply nested value inside an event that decoded
                rejects.append(Reject(i, "event", "nested too deeply"))
        events = [event for _, event in candidates]
        columns = {f: [e.get(f) for e in events] for f in self.validator.spec.feature_names}
        bad = dict(self._check(columns, 0, len(events)))
        good = [candidate for pos, candidate in enumerate(candidates) if pos not in bad]
        rejects += [
            Reject(candidates[pos][0], field, self.scrub(candidates[pos][1], problem))
            for pos, (field, problem) in bad.items()
        ]
        rejects.sort(key=lambda r: r.index)
        return good, rejects, None if bad else columns

    def digests(self, table: pa.Table) -> list[int]:
        """Per row of a :meth:`table`, 64 bits that tell two versions of an event apart: the specified
        digest of its landed values (:func:`~pipelines.streaming.intake.digests.row_digests`)."""
        return row_digests(table, self._landed)

    def legacy_digests(self, table: pa.Table) -> list[int]:
        """:meth:`digests` as indexes written before the specified scheme hold them (read only)."""
        return legacy_digests(table, self._landed)

    def table(
        self, events: Sequence[dict[str, Any]], landed_at: str, known: dict[str, list[Any]] | None = None
    ) -> pa.Table:
        """Good events as an Arrow table in the landing schema (values as sent, nulls kept; PII and
        anything else outside the schema is left behind). ``known``: some columns already gathered."""
        columns = []
        known = known or {}
        for name, kind in zip(self.schema.names, self.schema.types, strict=True):  # Field.name: a new str per call
            if name == "landed_at":
                columns.append(pa.array([landed_at] * len(events), pa.string()))
                continue
            values = known[name] if name in known else [e.get(name) for e in events]
            try:
                columns.append(pa.array(values, kind))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # an int feature sent as 3.0: checked integral
                columns.append(pa.array(values, pa.float64()).cast(kind))
        return pa.Table.from_arrays(columns, schema=self.schema)

    # -- checks -------------------------------------------------------------------------

    def _envelope(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            raise InvalidFeature("event", "empty message")
        if len(raw) > self.max_event_bytes:
            raise InvalidFeature("event", f"oversized: {len(raw)} bytes, the limit is {self.max_event_bytes}")
        event = decode_object(raw)
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID or not event_id.isprintable():
            raise InvalidFeature(
                "event_id", f"expected a printable string of 1 to {MAX_EVENT_ID} characters, without control characters"
            )
        when = event.get("occurred_at")
        try:
            datetime.fromisoformat(when)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidFeature("occurred_at", "expected an ISO-8601 time") from None
        unknown = event.keys() - self._known
        if unknown:
            digests = ", ".join(sorted(name_digest(name) for name in unknown))
            raise InvalidFeature(
                UNKNOWN_FIELD,
                f"{len(unknown)} field(s) not in the spec (name SHA-256 {digests}): refused, "
                "it may be undeclared personal data",
            )
        self._target(event.get(self.spec.target.name, None), self.spec.target.name in event)
        return event

    def scrub(self, event: dict[str, Any] | None, text: str) -> str:
        """``text`` (a reject reason) with the values of the event's PII fields blanked out."""
        for name in self.spec.pii_names:
            value = (event or {}).get(name)
            if isinstance(value, str | int | float) and len(str(value)) >= 3:
                text = text.replace(str(value), "***")
        return text

    def _target(self, value: Any, present: bool) -> None:
        target = self.spec.target
        if not present or value is None:
            raise InvalidFeature(target.name, "the target is missing")
        if self.spec.is_classifier:
            if type(value) is not bool:
                raise InvalidFeature(target.name, f"expected true or false, got {type(value).__name__}")
            return
        if type(value) not in (int, float) or not math.isfinite(value):
            raise InvalidFeature(target.name, f"expected a finite number, got {value!r:.40}")
        if target.min is not None and value < target.min:
            raise InvalidFeature(target.name, f"value {value:g} is below the minimum {target.min:g}")
        if target.max is not None and value > target.max:
            raise InvalidFeature(target.name, f"value {value:g} is above the maximum {target.max:g}")

    def _check(self, columns: dict[str, list[Any]], start: int, stop: int) -> list[tuple[int, tuple[str, str]]]:
        """Rows ``start:stop`` the validator refuses, with field and problem."""
        if start == stop:
            return []
        try:
            self.validator.columns({f: values[start:stop] for f, values in columns.items()})
            return []
        except InvalidFeature as exc:
            if stop - start == 1:
                return [(start, (exc.field, exc.problem))]
        middle = (start + stop) // 2
        return self._check(columns, start, middle) + self._check(columns, middle, stop)


def name_digest(name: str) -> str:
    """12 hex digits of the SHA-256 of a field name: tells names apart without showing them."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def decode_object(raw: bytes, strict: bool = True) -> dict[str, Any]:
    """One JSON object from ``raw``, or :class:`InvalidFeature` (never another exception).

    orjson decodes the common case (valid UTF-8, no lone surrogate, depth under 1024) about twice
    as fast; anything it refuses goes through the standard decoder, whose answers the policy uses
    (it also reads ``NaN``/``Infinity``, refused later as not finite, naming the field). ``strict``:
    a duplicate key in any object is refused (orjson keeps the last silently); checked for certain
    only when the object has fewer keys than ``raw`` has key-like tokens (:func:`_maybe_duplicates`)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _slow_decode(raw)
    if not isinstance(value, dict):
        raise InvalidFeature("event", f"expected a JSON object, got {type(value).__name__}")
    if strict and _maybe_duplicates(raw, len(value)):
        _no_duplicate_keys(raw)
    return value


def _maybe_duplicates(raw: bytes, keys: int) -> bool:
    """False when ``raw`` (a JSON object of ``keys`` distinct keys) surely has no duplicate key:
    every key token ends with ``"``, optional whitespace and ``:``, so the count of those (strings
    that happen to contain one only add to it) bounds the keys written. One regex scan (~2 µs for
    an event; five ``bytes`` scans for the common spelling measured slower)."""
    return len(_KEY_END.findall(raw)) != keys


def _no_duplicate_keys(raw: bytes) -> None:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise InvalidFeature(key, "duplicate key in a JSON object: ambiguous, refused")
            seen.add(key)
        return dict(items)

    try:
        json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # decoded once already: not expected
        raise InvalidFeature("event", "not valid JSON") from None


def _slow_decode(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        value = _decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFeature("event", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidFeature("event", "not valid JSON (nested too deeply)") from None
    if isinstance(value, dict) and "\\u" in text:  # only an escape can make a lone surrogate
        field = _lone_surrogate(value)
        if field is not None:
            raise InvalidFeature(field, "not valid Unicode (a lone surrogate escape)")
    return value


def _lone_surrogate(event: dict[str, Any]) -> str | None:
    """The top-level field whose name or value (at any depth) holds a lone surrogate, or None."""
    for key, value in event.items():
        stack = [key, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return key if _encodable(key) else "event"
            elif isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list):
                stack += item
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
