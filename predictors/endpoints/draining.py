"""Drain before a stop: SIGUSR1 makes every later HTTP response carry ``Connection: close``.

A pod being replaced keeps getting requests on the keep-alive connections clients opened to it
(a Service routes a connection once, when it opens). If the server just stopped, a request racing
the close of an idle connection fails (``ReadError``, ``RemoteProtocolError``). So Kubernetes'
preStop hook (``manifests/components/standard-mode``) sends SIGUSR1 and waits: each client's next
response closes its connection, its next request opens a new one to a live pod, and by SIGTERM
no connection is left for the stop to cut.
"""

from __future__ import annotations

import logging
import signal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

CLOSE = (b"connection", b"close")


class Drain:
    """Whether the server drains; :meth:`on_signal` turns it on at SIGUSR1."""

    def __init__(self) -> None:
        self.draining = False

    def start(self, *_: object) -> None:
        if not self.draining:
            logger.info("draining: every response now closes its connection (a stop is coming)")
        self.draining = True

    def on_signal(self, signum: int = signal.SIGUSR1) -> None:
        signal.signal(signum, self.start)


class CloseWhenDraining:
    """ASGI middleware: while draining, responses ask the client to close the connection."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app, self.drain = app, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drain.draining or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await self.app(scope, receive, closing)
