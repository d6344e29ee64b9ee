"""Typed errors. Two families: the caller's mistake (:class:`InvalidRow`, :class:`ModelNotFound`:
fix the code, a retry or a fallback would hide it) and the platform being unavailable
(:class:`Unavailable` and its subclasses: a fallback answer is fine)."""

from __future__ import annotations

import re

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class PlatformError(Exception):
    """Any failed call. ``status``: the HTTP status (None when no answer came)."""

    def __init__(self, message: str, status: int | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.model = model


class InvalidRow(PlatformError):
    """The row breaks the model's contract (the server's 400, or the local contract check).
    ``field``: the feature the message names (None when it names none)."""

    def __init__(self, message: str, status: int | None = 400, model: str | None = None) -> None:
        super().__init__(message, status, model)
        match = _FIELD.match(message)
        self.field = match.group(1) if match else None


class ModelNotFound(PlatformError):
    """The server does not serve this model (404)."""


class Unavailable(PlatformError):
    """No answer in time: the caller's fallback applies."""


class ServerError(Unavailable):
    """A 5xx answer (503: the model is not ready)."""


class Timeout(Unavailable):
    """The call's time budget ran out."""


class ConnectionFailed(Unavailable):
    """The server could not be reached (refused, reset, DNS)."""


class CircuitOpen(Unavailable):
    """Not sent: the circuit breaker is open after repeated failures."""
