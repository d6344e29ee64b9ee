"""The HTTP server's edges: OIP error bodies (``{"error": "…"}``), one WARNING line per client
mistake, and a request body limit enforced before the body is read.

A :class:`~predictors.protocol.errors.ServingError` becomes an HTTP answer here and nowhere else:
:func:`serving_error` inside the framework, :func:`send_error` on the fast infer path ahead of it."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictors.protocol.errors import ServingError

logger = logging.getLogger("predictors.http")


def error_body(status: int, message: str, where: str) -> bytes:
    """The OIP error body; client errors (4xx/503) are logged as one WARNING line, no traceback."""
    logger.warning("%s -> %d: %s", where, status, message)
    return orjson.dumps({"error": message})


def error_response(status: int, message: str, request: Request | None = None) -> Response:
    where = f"{request.method} {request.url.path}" if request is not None else "request"
    return Response(error_body(status, message, where), status_code=status, media_type="application/json")


async def serving_error(request: Request, exc: Exception) -> Response:
    """The framework's handler for :class:`ServingError`, whatever route raised it (ours or KServe's)."""
    assert isinstance(exc, ServingError)
    return error_response(exc.status, exc.message, request)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route), 405 and body-parsing errors, as OIP errors."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    return error_response(exc.status_code, detail, request)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body: larger than the limit of {limit} bytes")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413: at once when Content-Length says so,
    else (chunked upload) as soon as the running count passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope["headers"])
        if length is not None:
            if length > self.limit:
                await send_error(send, 413, f"body: {length} bytes exceed the limit of {self.limit} bytes")
                return
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_error(send: Send, status: int, message: str, where: str = "request") -> None:
    """An OIP error body straight onto the ASGI ``send`` (outside the framework)."""
    await send_body(send, status, error_body(status, message, where))


async def send_body(
    send: Send, status: int, body: bytes, media_type: bytes = b"application/json", extra: list[Any] | None = None
) -> None:
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
