"""KServe payload-logger CloudEvents -> inference-log records (pure; the service posts them on).

The logger of an InferenceService (``spec.predictor.logger``, mode ``all``) POSTs every request and
every response as a binary-mode CloudEvent: headers ``ce-id`` (shared by the pair), ``ce-type``
(``org.kubeflow.serving.inference.request`` / ``.response``), ``ce-source``,
``ce-inferenceservicename`` (``credit-risk``), ``ce-endpoint`` (``default`` or ``canary``); the
body is the V1 (``instances`` / ``predictions``) or V2 (``inputs`` / ``outputs``) JSON. The two
halves arrive in either order: :class:`PayloadJoiner` holds the first (at most ``max_pending``,
oldest dropped) until its partner comes, then yields a record in the inference-log format::

    {"request_id", "model", "model_version", "role", "timestamp", "inputs": {feature: [...]},
     "outputs": {name: [...]}, "source": "payload-logger"}

``request_id`` is the id the caller saw (the V2 response/request ``id``), else ``ce-id``. The
canary endpoint is logged with role ``challenger``. Inputs are still raw here; the service runs
them through the spec's Validator, as the predictor does.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


class PayloadError(ValueError):
    """A CloudEvent that cannot become a record; the message says why."""


def model_name(isvc: str) -> str:
    """credit-risk -> credit_risk (the reverse of the InferenceService naming)."""
    return isvc.replace("-", "_")


def request_columns(body: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{feature: values}`` of a V2 (named tensors) or V1 (``instances`` of objects) request."""
    if isinstance(body.get("inputs"), list):
        return {str(t["name"]): list(t.get("data") or []) for t in body["inputs"] if isinstance(t, dict)}
    instances = body.get("instances")
    if isinstance(instances, list) and all(isinstance(row, dict) for row in instances):
        names = list(dict.fromkeys(name for row in instances for name in row))
        return {name: [row.get(name) for row in instances] for name in names}
    raise PayloadError("request: neither V2 inputs nor V1 instances of objects")


def response_outputs(body: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str | None]:
    """``({output: values}, model_version)`` of a V2 or V1 response; an error body raises."""
    version = body.get("model_version")
    version = str(version) if version not in (None, "") else None
    if isinstance(body.get("outputs"), list):
        return {str(t["name"]): list(t.get("data") or []) for t in body["outputs"] if isinstance(t, dict)}, version
    predictions = body.get("predictions")
    if isinstance(predictions, list) and predictions:
        if all(isinstance(p, dict) for p in predictions):
            names = list(dict.fromkeys(n for p in predictions for n in p))
            return {n: [p.get(n) for p in predictions] for n in names}, version
        return {"prediction": list(predictions)}, version
    raise PayloadError(f"response: no outputs ({str(body.get('error', 'no predictions'))[:200]})")


def _parse(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise PayloadError("body is not a JSON object")
    return parsed


def join(headers: Mapping[str, str], request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """One inference-log record from the two halves of a logged call."""
    isvc = headers.get("ce-inferenceservicename") or ""
    outputs, version = response_outputs(response)
    model = str(response.get("model_name") or model_name(isvc))
    return {
        "request_id": str(response.get("id") or request.get("id") or headers["ce-id"]),
        "model": model_name(model),
        "model_version": version,
        "role": "challenger" if headers.get("ce-endpoint") == "canary" else "champion",
        "timestamp": headers.get("ce-time") or datetime.now(UTC).isoformat(),
        "inputs": request_columns(request),
        "outputs": outputs,
        "source": "payload-logger",
    }


class PayloadJoiner:
    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def add(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        """Take one CloudEvent (lower-case header names); returns the record once both halves are in."""
        event_id, kind = headers.get("ce-id"), headers.get("ce-type")
        if not event_id:
            raise PayloadError("no ce-id header")
        if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
            raise PayloadError(f"unexpected ce-type {kind!r}")
        half = _parse(body)
        other = self._pending.pop(event_id, None)
        if other is None or other[0] == kind:
            self._pending[event_id] = (kind, half)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
            return None
        request, response = (half, other[1]) if kind == REQUEST_TYPE else (other[1], half)
        return join(headers, request, response)

    @property
    def pending(self) -> int:
        return len(self._pending)
