"""Serving wiring: the KServe ModelServer plus the platform's few extra routes.

Model code stays in :mod:`predictors.base`; this module only adds
- ``GET /api/v1/predict/<model>?feature=value&…`` — the Sales Service's query-string call,
- ``GET /v2/models/<model>`` answering with the loaded model version (KServe leaves it out),
- a 400 (not FastAPI's 422) naming the field for a malformed V2 request body,
and starts the server with every model registered, ready or not, so one that cannot load
answers "not ready" while the others serve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve.errors import InvalidInput, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from predictors import contract
from predictors.base import QueryRequest, SpecModel

QUERY_ROUTE = "/api/v1/predict/{model_name}"


def _spec_model(dataplane: DataPlane, model_name: str) -> SpecModel:
    model = dataplane.get_model_from_registry(model_name)  # unknown name -> 404
    if not isinstance(model, SpecModel):
        raise InvalidInput(f"model {model_name} does not take query-string calls")
    return model


def add_platform_routes(app: FastAPI, dataplane: DataPlane) -> None:
    """Register the extra routes; call before KServe registers its own so ours take precedence."""

    async def query_predict(model_name: str, request: Request) -> dict[str, Any]:
        model = _spec_model(dataplane, model_name)
        if not model.ready:
            raise ModelNotReady(model_name)
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in params:
                raise InvalidInput(f"{key}: given more than once")
            params[key] = value
        result, _ = await model(QueryRequest(params), dict(request.headers))
        return result

    async def model_metadata(model_name: str) -> dict[str, Any]:
        model = _spec_model(dataplane, model_name)
        metadata = await dataplane.model_metadata(model_name)
        runtime = {"runtime": model.scorer.runtime, "runtime_check": model.scorer.check} if model.scorer else {}
        return metadata | {"versions": [model.version] if model.version else [], "parameters": runtime}

    async def invalid_body(_: Request, exc: Exception) -> ORJSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                problems.append(f"body: not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
                continue
            loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "InferenceRequest")]
            if loc[:1] == ["bytes"]:  # the binary-body branch of KServe's Union: not what the caller meant
                continue
            problems.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
        return ORJSONResponse(status_code=400, content={"error": "; ".join(problems) or "body: invalid request"})

    app.add_api_route(QUERY_ROUTE, query_predict, methods=["GET"], tags=["ConstructOS"])
    contract.register(app, dataplane)  # GET /api/v1/models/<model>/contract
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"], tags=["V2"])
    app.add_exception_handler(RequestValidationError, invalid_body)


class _QuietClientErrors(logging.Filter):
    """KServe logs every 400 with a traceback; a client mistake is worth one line, not a stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InvalidInput):
            record.msg, record.args, record.exc_info = "invalid input: %s", (record.exc_info[1],), None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, _QuietClientErrors) for f in kserve_logger.filters):
        kserve_logger.addFilter(_QuietClientErrors())


def _register(models: Sequence[SpecModel], repository: ModelRepository) -> None:
    for model in models:
        if not model.ready:
            model.load()
        repository.update(model)


def create_app(models: Sequence[SpecModel]) -> FastAPI:
    """A fresh app wired exactly like the ModelServer's, for in-process use (tests, tools)."""
    repository = ModelRepository()
    _register(models, repository)
    dataplane = DataPlane(model_registry=repository)
    app = FastAPI(default_response_class=ORJSONResponse)
    add_platform_routes(app, dataplane)
    rest = RESTServer("kserve.model_server:app", dataplane, ModelRepositoryExtension(repository), http_port=0)
    rest._add_middlewares(app)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    quiet_client_errors()
    return app


def serve(models: Sequence[SpecModel], *, retry_seconds: float = 30.0, **server_options: Any) -> None:
    """Start the KServe ModelServer with ``models``; blocks until stopped. Models that cannot
    load answer "not ready" and are retried every ``retry_seconds`` in the background."""
    from kserve import ModelServer, model_server

    server = ModelServer(**server_options)
    quiet_client_errors()
    _register(models, server.registered_models)
    add_platform_routes(model_server.app, server.dataplane)
    if not any(m.ready for m in models):  # KServe will not start empty; let the platform restart us
        raise SystemExit(f"no model could be loaded: {', '.join(m.name for m in models)} (see the errors above)")
    pending = [m for m in models if not m.ready]
    if pending and retry_seconds > 0:
        threading.Thread(target=_keep_loading, args=(pending, retry_seconds), daemon=True).start()
    server.start(list(models))


def _keep_loading(models: Sequence[SpecModel], every: float) -> None:
    """Retry models that could not load (registry not reachable yet, alias not set yet)."""
    waiting = list(models)
    while waiting:
        time.sleep(every)
        waiting = [m for m in waiting if not m.load()]
