"""Draining before a stop (predictors.endpoints.draining): once SIGUSR1 arrives, every HTTP response asks the
client to close its connection, so its next request opens a new one (to a live pod)."""

from __future__ import annotations

import os
import signal

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from predictors.endpoints.draining import CloseWhenDraining, Drain


def app(drain: Drain) -> CloseWhenDraining:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"Connection": "keep-alive"})

    return CloseWhenDraining(Starlette(routes=[Route("/", hello)]), drain)


def test_responses_keep_the_connection_until_sigusr1_then_close_it() -> None:
    drain = Drain()
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        drain.on_signal()
        client = TestClient(app(drain))
        assert client.get("/").headers["connection"] == "keep-alive"
        os.kill(os.getpid(), signal.SIGUSR1)
        assert drain.draining
        answer = client.get("/")
        assert answer.text == "hi"
        assert answer.headers.get_list("connection") == ["close"]
    finally:
        signal.signal(signal.SIGUSR1, previous)
