"""Retrain requests (``mlops.retrain-requests``): ``{"model": ..., "reason": ..., "request_id": ...}``.

:func:`parse_retrain_request` turns any bytes into a request or a :class:`BadRequest` whose message holds
no value from the record (a refused request is logged and reported, and could carry anything).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from feature_specs import InvalidFeature
from pipelines.streaming.intake.validation import UNKNOWN_FIELD, decode_object

MAX_TEXT = 500
FIELDS = ("model", "reason", "request_id")


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class RetrainRequest:
    model: str
    reason: str
    request_id: str | None


def parse_retrain_request(raw: bytes | None, models: Collection[str]) -> RetrainRequest:
    if raw is None:
        raise BadRequest("empty message")
    try:
        body = decode_object(raw)
    except InvalidFeature as exc:  # a field name may be anything: only ours are named
        field = exc.field if exc.field in ("event", *FIELDS) else UNKNOWN_FIELD
        raise BadRequest(f"{field}: {exc.problem}") from None
    model = body.get("model")
    if not isinstance(model, str) or model not in models:
        raise BadRequest(f"'model' is not one of the models handled here ({', '.join(sorted(models))})")
    texts = {name: body.get(name) for name in ("reason", "request_id")}
    for name, value in texts.items():
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_TEXT):
            raise BadRequest(f"'{name}' must be a string of 1 to {MAX_TEXT} characters")
    return RetrainRequest(model, texts["reason"] or "requested", texts["request_id"])
