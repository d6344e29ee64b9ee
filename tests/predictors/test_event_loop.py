"""The server runs on the event loop ``--event_loop`` names, configured as KServe configures it.

KServe 0.20's ModelServer configures a loop that ``asyncio.run`` then replaces and never applies
``--event_loop``; :class:`PlatformServer` chooses the loop before the run and configures the one
that runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from kserve.model_repository import ModelRepository

from predictors.server import PlatformServer


@pytest.fixture(autouse=True)
def keep_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def running_loop(event_loop: str) -> tuple[asyncio.AbstractEventLoop, Any]:
    """Run the server's own start-up path with one stand-in server that records the running loop."""
    server = PlatformServer(registered_models=ModelRepository(), enable_grpc=False, event_loop=event_loop)
    seen: list[tuple[asyncio.AbstractEventLoop, Any]] = []

    async def record() -> None:
        loop = asyncio.get_running_loop()
        seen.append((loop, loop.get_exception_handler()))

    server.servers = [record()]
    server.setup_event_loop()
    asyncio.run(server._serve())
    return seen[0]


@pytest.mark.parametrize("event_loop", ["auto", "uvloop"])
def test_the_server_runs_on_uvloop_by_default_and_when_asked(event_loop: str) -> None:
    loop, handler = running_loop(event_loop)
    assert isinstance(loop, uvloop.Loop)
    assert handler is not None  # KServe's set-up reached the loop that runs


def test_asyncio_when_asked() -> None:
    loop, handler = running_loop("asyncio")
    assert not isinstance(loop, uvloop.Loop)
    assert handler is not None
