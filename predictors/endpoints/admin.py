"""The model repository extension (index, load, unload), locked down.

KServe mounts it for anyone. Here it is off unless ``CONSTRUCTOS_ADMIN_TOKEN`` is set, and then
every call needs ``Authorization: Bearer <token>`` (REST) or the same ``authorization`` metadata
(gRPC). An unloaded model stays listed, answers "not ready" everywhere, and can be loaded again.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from predictors.protocol.errors import ServingError
from predictors.runtime.spec_model import SpecModel


class Admin:
    def __init__(self, models: Sequence[SpecModel], token: str | None) -> None:
        self.models = {m.name: m for m in models}
        self._token = token

    def authorize(self, authorization: str | None) -> None:
        """Raise a ServingError unless the extension is on and the bearer token matches."""
        if not self._token:
            raise ServingError("the model repository extension is disabled (set CONSTRUCTOS_ADMIN_TOKEN)", 404)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ServingError("authorization: a bearer token is required", 401)
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            raise ServingError("authorization: the token is not valid", 403)

    def model(self, name: str) -> SpecModel:
        if name not in self.models:
            raise ServingError(f"model {name} not found; this server knows {', '.join(sorted(self.models))}", 404)
        return self.models[name]

    def index(self) -> list[dict[str, Any]]:
        return [
            {"name": m.name, "version": m.version or "", "state": "READY" if m.ready else "UNAVAILABLE", "reason": ""}
            for m in self.models.values()
        ]

    async def load(self, name: str) -> None:
        model = self.model(name)
        if not await asyncio.to_thread(model.load):
            raise ServingError(f"model {name} could not be loaded from {model.model_uri} (see the server log)", 409)

    def unload(self, name: str) -> None:
        self.model(name).unload()


def admin_routes(admin: Admin) -> list[Route]:
    """REST routes of the extension; a refusal is a ServingError
    (:func:`predictors.protocol.http_edges.serving_error`)."""

    async def index(request: Request) -> Response:
        admin.authorize(request.headers.get("authorization"))
        return _json(admin.index())

    async def load(request: Request) -> Response:
        admin.authorize(request.headers.get("authorization"))
        await admin.load(request.path_params["model_name"])
        return _json({"name": request.path_params["model_name"], "load": True})

    async def unload(request: Request) -> Response:
        admin.authorize(request.headers.get("authorization"))
        admin.unload(request.path_params["model_name"])
        return _json({"name": request.path_params["model_name"], "unload": True})

    prefix = "/v2/repository"
    return [
        Route(f"{prefix}/index", index, methods=["POST"]),
        Route(prefix + "/models/{model_name}/load", load, methods=["POST"]),
        Route(prefix + "/models/{model_name}/unload", unload, methods=["POST"]),
    ]


def _json(answer: Any) -> Response:
    return Response(orjson.dumps(answer), media_type="application/json")
