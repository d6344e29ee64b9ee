"""The prediction client a Django view calls.

    client = Client("http://lead-score.ml.svc", timeout_s=0.25)
    p = client.predict("lead_score", {"customer_industry": "Construction", "opportunity_value": 5e6},
                       fallback={"score": None})
    p["score"], p.fallback

Each call has one time budget (``timeout_s``) that covers connecting, retries and reading. Only
failures that cannot have been the caller's fault are retried (refused or reset connections, 502,
503, 504; inference has no side effects, so a repeat is harmless), with exponential back-off and
full jitter, never past the budget; a timeout is not retried (the budget is spent). 4xx answers
raise :class:`InvalidRow` / :class:`ModelNotFound` with the server's message, fallback or not.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from constructos_client.breaker import CircuitBreaker
from constructos_client.contract import check_row
from constructos_client.errors import (
    CircuitOpen,
    ConnectionFailed,
    InvalidRow,
    ModelNotFound,
    PlatformError,
    ServerError,
    Unavailable,
)
from constructos_client.transport import Transport

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
NO_FALLBACK: Any = object()
Fallback = Mapping[str, Any] | Callable[[Unavailable], Mapping[str, Any]]


@dataclass(frozen=True)
class Prediction:
    """The outputs of one row (``probability``, ``score``, ...); ``fallback``: they are the
    caller's fallback because the platform did not answer (``error`` says why)."""

    model: str
    outputs: dict[str, Any]
    version: str | None = None
    fallback: bool = False
    error: Unavailable | None = None

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]


@dataclass(frozen=True)
class CallEvent:
    """What a metrics hook receives after every call."""

    model: str
    route: str  # v2 | query | contract
    outcome: str  # ok | invalid | not_found | unavailable | circuit_open
    status: int | None
    attempts: int
    elapsed_s: float
    fallback: bool
    breaker: str  # the model's circuit state after the call


@dataclass
class _Call:
    model: str
    route: str
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    status: int | None = None


def _datatype(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FP64"
    return "BYTES"


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 0.25,
        retries: int = 2,
        backoff_s: float = 0.01,
        backoff_max_s: float = 0.1,
        breaker_failures: int = 5,
        breaker_reset_s: float = 5.0,
        check_contract: bool = False,
        hooks: Iterable[Callable[[CallEvent], None]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.transport = Transport(base_url, headers)
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.check_contract = check_contract
        self.hooks = list(hooks)
        self._breaker_args = (breaker_failures, breaker_reset_s)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._contracts: dict[str, dict[str, Any]] = {}
        self._types: dict[str, dict[str, str]] = {}  # V2 datatype per feature, from the contract
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------------------

    def predict(
        self,
        model: str,
        row: Mapping[str, Any],
        *,
        fallback: Any = NO_FALLBACK,
        timeout_s: float | None = None,
        check: bool | None = None,
    ) -> Prediction:
        """Score one row over V2 REST (``POST /v2/models/<model>/infer``). ``None`` values are left
        out (the model imputes optional features). ``fallback``: outputs (or a function of the
        error returning them) to answer with when the platform is unavailable."""
        row = {k: v for k, v in row.items() if v is not None}
        if check if check is not None else self.check_contract:
            check_row(self.contract(model, timeout_s=timeout_s), row, model)
        types = self._datatypes(model)
        inputs = [
            {"name": k, "datatype": types.get(k) or _datatype(v), "shape": [1], "data": [v]} for k, v in row.items()
        ]
        body = json.dumps({"inputs": inputs}).encode()
        call = _Call(model, "v2")
        try:
            answer = self._send(call, "POST", f"/v2/models/{quote(model, safe='')}/infer", body, timeout_s)
            outputs = {o["name"]: o["data"][0] for o in answer["outputs"]}
            return self._done(call, Prediction(model, outputs, answer.get("model_version")))
        except PlatformError as exc:
            return self._failed(call, exc, fallback)

    def predict_query(
        self, model: str, params: Mapping[str, Any], *, fallback: Any = NO_FALLBACK, timeout_s: float | None = None
    ) -> Prediction:
        """Score one row with the query-string route ``GET /api/v1/predict/<model>?feature=value&…``
        (feature names or their aliases, e.g. ``industry``, ``value``)."""
        query = urlencode({k: _query_value(v) for k, v in params.items() if v is not None})
        call = _Call(model, "query")
        try:
            answer = self._send(call, "GET", f"/api/v1/predict/{quote(model, safe='')}?{query}", None, timeout_s)
            version = answer.pop("model_version", None)
            answer.pop("model_name", None)
            return self._done(call, Prediction(model, answer, version))
        except PlatformError as exc:
            return self._failed(call, exc, fallback)

    def contract(self, model: str, *, timeout_s: float | None = None, refresh: bool = False) -> dict[str, Any]:
        """The model's contract (JSON Schema of one row), fetched once and cached."""
        if refresh or model not in self._contracts:
            call = _Call(model, "contract")
            try:
                found = self._send(call, "GET", f"/api/v1/models/{quote(model, safe='')}/contract", None, timeout_s)
            except PlatformError as exc:
                self._emit(call, _outcome(exc), False)
                raise
            self._emit(call, "ok", False)
            self._contracts[model] = found
            properties = found.get("properties", {})
            self._types[model] = {k: v["x-v2-datatype"] for k, v in properties.items() if "x-v2-datatype" in v}
        return self._contracts[model]

    def check(self, model: str, row: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidRow` naming the field when ``row`` breaks the model's contract."""
        check_row(self.contract(model), {k: v for k, v in row.items() if v is not None}, model)

    def breaker(self, model: str) -> CircuitBreaker:
        with self._lock:
            if model not in self._breakers:
                self._breakers[model] = CircuitBreaker(*self._breaker_args)
            return self._breakers[model]

    def close(self) -> None:
        self.transport.close()

    # -- internals --------------------------------------------------------------------

    def _datatypes(self, model: str) -> dict[str, str]:
        return self._types.get(model) or {}

    def _send(self, call: _Call, method: str, path: str, body: bytes | None, timeout_s: float | None) -> Any:
        breaker = self.breaker(call.model)
        deadline = call.started + (timeout_s or self.timeout_s)
        if not breaker.allow():
            raise CircuitOpen(f"{call.model}: circuit open after repeated failures", None, call.model)
        while True:
            call.attempts += 1
            try:
                status, data = self.transport.request(method, path, body, deadline)
                call.status = status
                if status < 300:
                    breaker.success()
                    return json.loads(data)
                error = _http_error(status, data, call.model)
            except ConnectionFailed as exc:
                error = exc
            except Unavailable as exc:  # a timeout: the budget is spent
                breaker.failure()
                raise exc
            if not isinstance(error, Unavailable):  # the caller's mistake: the server is fine
                breaker.success()
                raise error
            pause = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (call.attempts - 1)))
            retriable = isinstance(error, ConnectionFailed) or error.status in RETRY_STATUSES
            if not retriable or call.attempts > self.retries or time.monotonic() + pause >= deadline:
                breaker.failure()
                raise error
            time.sleep(pause)

    def _done(self, call: _Call, prediction: Prediction) -> Prediction:
        self._emit(call, "ok", False)
        return prediction

    def _failed(self, call: _Call, exc: PlatformError, fallback: Any) -> Prediction:
        use = isinstance(exc, Unavailable) and fallback is not NO_FALLBACK
        self._emit(call, _outcome(exc), use)
        if not use:
            raise exc
        assert isinstance(exc, Unavailable)
        outputs = fallback(exc) if callable(fallback) else fallback
        return Prediction(call.model, dict(outputs), None, True, exc)

    def _emit(self, call: _Call, outcome: str, fallback: bool) -> None:
        if not self.hooks:
            return
        event = CallEvent(
            call.model,
            call.route,
            outcome,
            call.status,
            call.attempts,
            time.monotonic() - call.started,
            fallback,
            self.breaker(call.model).state,
        )
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:  # a metrics hook never fails the call
                log.exception("metrics hook %r failed", hook)


def _query_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _outcome(exc: PlatformError) -> str:
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, InvalidRow):
        return "invalid"
    if isinstance(exc, ModelNotFound):
        return "not_found"
    return "unavailable" if isinstance(exc, Unavailable) else "error"


def _http_error(status: int, data: bytes, model: str) -> PlatformError:
    try:
        message = str(json.loads(data).get("error") or data[:500].decode(errors="replace"))
    except (ValueError, AttributeError):
        message = data[:500].decode(errors="replace") or f"HTTP {status}"
    if status == 404:
        return ModelNotFound(message, status, model)
    if 400 <= status < 500:
        return InvalidRow(message, status, model)
    return ServerError(message, status, model)
