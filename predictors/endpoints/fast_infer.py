"""The V2 infer route as a bare ASGI handler, ahead of the web framework.

A 1-row request spends about a fifth of its time in Starlette's routing, middleware, request and
response objects. :class:`FastInfer` answers ``POST /v2/models/{m}[/versions/{v}]/infer`` itself,
with the same parsing, scoring and encoding as the routed path (:func:`predictors.endpoints.rest_v2.answer_infer`);
every other request goes on to the framework. It sits inside :class:`~predictors.protocol.http_edges.BodyLimit`.
"""

from __future__ import annotations

import logging
import re

import orjson
from kserve.model_repository import ModelRepository
from starlette.types import ASGIApp, Receive, Scope, Send

from predictors.endpoints.rest_v2 import BINARY_HEADER, answer_infer, find_model
from predictors.protocol.errors import ServingError
from predictors.protocol.http_edges import BodyTooLarge, send_body, send_error

logger = logging.getLogger("predictors.http")

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_BINARY_HEADER = BINARY_HEADER.encode()


class Disconnected(Exception):
    """The client went away before its body arrived."""


class FastInfer:
    def __init__(self, app: ASGIApp, repository: ModelRepository) -> None:
        self.app, self.repository = app, repository

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        binary_header = request_id = None
        for key, value in scope["headers"]:
            if key == _BINARY_HEADER:
                binary_header = value.decode("latin-1")
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")
        try:
            model = find_model(self.repository, found.group(1), found.group(2))
            answer = await answer_infer(model, await read_body(receive), binary_header, request_id)
        except Disconnected:
            return
        except ServingError as exc:
            await send_error(send, exc.status, exc.message, f"POST {scope['path']}")
            return
        except BodyTooLarge as exc:
            await send_error(send, exc.status_code, str(exc.detail), f"POST {scope['path']}")
            return
        except Exception as exc:  # what KServe's generic handler answers, with the traceback logged
            logger.exception("POST %s failed", scope["path"])
            await send_body(send, 500, orjson.dumps({"error": f"{type(exc).__name__} : {exc}"}))
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        await send_body(send, 200, answer.body, answer.media_type.encode(), extra)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
