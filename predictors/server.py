"""Serving wiring: the KServe ModelServer plus the platform's own edges.

Model code stays in :mod:`predictors.runtime.spec_model`; this module mounts, ahead of KServe's routes,
- the V2 model routes (:mod:`predictors.endpoints.rest_v2`) and gRPC service (:mod:`predictors.endpoints.grpc_v2`),
- the model repository extension, locked down (:mod:`predictors.endpoints.admin`),
- ``GET /api/v1/predict/<model>?feature=value&…`` — the Sales Service's query-string call,
- OIP ``{"error": …}`` bodies for every client mistake and a request body limit,
- ``Connection: close`` on every response once SIGUSR1 says a stop is coming (:mod:`predictors.endpoints.draining`),
and starts the server with every model registered, ready or not, so one that cannot load
answers "not ready" while the others serve.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve import ModelServer
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException
from starlette.responses import Response
from timing_asgi import TimingMiddleware

from predictors.endpoints.admin import Admin, admin_routes
from predictors.endpoints.draining import CloseWhenDraining, Drain
from predictors.endpoints.fast_infer import FastInfer
from predictors.endpoints.grpc_v2 import GrpcServer, Servicer
from predictors.endpoints.rest_v2 import v2_routes
from predictors.protocol import contract
from predictors.protocol.errors import ServingError
from predictors.protocol.http_edges import BodyLimit, error_response, http_exception, serving_error
from predictors.runtime.request_batch import QueryRequest
from predictors.runtime.spec_model import SpecModel
from predictors.settings import ServingSettings

QUERY_ROUTE = "/api/v1/predict/{model_name}"


def _spec_model(dataplane: DataPlane, model_name: str) -> SpecModel:
    model = dataplane.get_model_from_registry(model_name)  # unknown name -> 404
    if not isinstance(model, SpecModel):
        raise ServingError(f"model {model_name} does not take query-string calls")
    return model


def drop_kserve_timing(app: FastAPI) -> None:
    """KServe's TimingMiddleware logs two trace lines per request and calls ``getrusage`` twice
    (costly with ONNX Runtime and gRPC threads): a fifth of a 1-row request. The Prometheus
    histograms time every request already. It is added after our wiring, so it is dropped at
    startup and the middleware stack rebuilt on the next request."""

    async def drop() -> None:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        app.middleware_stack = None

    app.router.on_startup.append(drop)


def add_platform_routes(app: FastAPI, dataplane: DataPlane, admin: Admin, settings: ServingSettings) -> None:
    """Mount the platform's routes ahead of KServe's (ours take precedence), the OIP error
    bodies and the body limit."""

    async def query_predict(model_name: str, request: Request) -> dict[str, Any]:
        model = _spec_model(dataplane, model_name)
        if not model.ready:
            raise ServingError(f"model {model_name} is not ready", 503)
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in params:
                raise ServingError(f"{key}: given more than once")
            params[key] = value
        result, _ = await model(QueryRequest(params), dict(request.headers))
        return result

    async def invalid_body(request: Request, exc: Exception) -> Response:
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
        return error_response(400, "; ".join(problems) or "body: invalid request", request)

    app.add_api_route(QUERY_ROUTE, query_predict, methods=["GET"], tags=["ConstructOS"])
    contract.register(app, dataplane)  # GET /api/v1/models/<model>/contract
    repository = dataplane.model_registry
    assert isinstance(repository, ModelRepository)
    app.router.routes[0:0] = [*v2_routes(repository, dataplane.metadata), *admin_routes(admin)]
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(ServingError, serving_error)  # a subclass of InvalidInput: wins over KServe's handler
    app.add_middleware(FastInfer, repository=repository)  # inside the body limit (added last = outermost)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CloseWhenDraining, drain=DRAIN)  # outermost: every response, once draining
    drop_kserve_timing(app)


CLIENT_ERRORS = (InvalidInput, ModelNotFound, ModelNotReady, NotImplementedError)

#: Set by SIGUSR1 (Kubernetes' preStop hook) in a served process: see :mod:`predictors.endpoints.draining`.
DRAIN = Drain()


class _QuietClientErrors(logging.Filter):
    """KServe logs every 4xx with a traceback; a client mistake is worth one line, not a stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], CLIENT_ERRORS):
            error = record.exc_info[1]
            record.msg, record.args, record.exc_info = "client error: %s: %s", (type(error).__name__, error), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
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


def create_app(models: Sequence[SpecModel], settings: ServingSettings | None = None) -> FastAPI:
    """A fresh app wired exactly like the ModelServer's, for in-process use (tests, tools)."""
    settings = settings or ServingSettings()
    repository = ModelRepository()
    _register(models, repository)
    dataplane = DataPlane(model_registry=repository)
    app = FastAPI(default_response_class=ORJSONResponse)
    add_platform_routes(app, dataplane, Admin(models, _token(settings)), settings)
    rest = RESTServer("kserve.model_server:app", dataplane, ModelRepositoryExtension(repository), http_port=0)
    rest._add_middlewares(app)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    quiet_client_errors()
    return app


class PlatformServer(ModelServer):
    """KServe's ModelServer with our gRPC service in its event loop, stopped with it, on the
    event loop ``--event_loop`` names."""

    platform_grpc: GrpcServer | None = None
    _stopping: asyncio.Task[None] | None = None

    def setup_event_loop(self) -> None:
        """KServe 0.20 configures the loop ``asyncio.get_event_loop()`` makes before
        ``asyncio.run`` starts a new one, and never applies ``--event_loop``: every server ran on
        the pure-Python asyncio loop. Here the loop is chosen before the run ("auto": uvloop when
        it is installed, as uvicorn does) and configured once running (:meth:`_serve`)."""
        if self.event_loop in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if self.event_loop == "uvloop":
                    raise
                return
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def _serve(self) -> None:
        super().setup_event_loop()  # the running loop: exception handler and default executor
        await super()._serve()

    def attach_grpc(self, grpc_server: GrpcServer) -> None:
        self.platform_grpc = grpc_server
        self.servers.append(grpc_server.serve())

    def stop(self, sig: int) -> None:
        super().stop(sig)
        if self.platform_grpc is not None:
            self._stopping = asyncio.create_task(self.platform_grpc.stop(self.grace_period))


def serve(
    models: Sequence[SpecModel],
    settings: ServingSettings,
    *,
    grpc_port: int | None = None,
    **server_options: Any,
) -> None:
    """Start the KServe ModelServer with ``models`` (and gRPC on ``grpc_port`` unless None);
    blocks until stopped. Models that cannot load answer "not ready" and are retried every
    ``settings.load_retry_seconds`` in the background."""
    from kserve import model_server

    repository = ModelRepository()
    _register(models, repository)
    if not any(m.ready for m in models) and not (settings.start_not_ready and settings.load_retry_seconds > 0):
        raise SystemExit(f"no model could be loaded: {', '.join(m.name for m in models)} (see the errors above)")
    server = PlatformServer(registered_models=repository, enable_grpc=False, **server_options)
    admin = Admin(models, _token(settings))
    if grpc_port is not None:
        servicer = Servicer(server.dataplane, repository, admin)
        server.attach_grpc(GrpcServer(grpc_port, servicer, settings.max_body_bytes))
    quiet_client_errors()
    add_platform_routes(model_server.app, server.dataplane, admin, settings)
    DRAIN.on_signal()
    pending = [m for m in models if not m.ready]
    if pending and settings.load_retry_seconds > 0:
        threading.Thread(target=_keep_loading, args=(pending, settings.load_retry_seconds), daemon=True).start()
    # What is loaded now lives as long as the server: kept out of the garbage collector's full
    # passes, which otherwise walk ~300k objects (~200 ms) every few thousand requests: the p99.
    gc.collect()
    gc.freeze()
    # KServe starts only the models handed here and refuses an empty server with a non-empty list;
    # the others are in the repository already and turn ready when _keep_loading loads them.
    server.start([m for m in models if m.ready])


def _token(settings: ServingSettings) -> str | None:
    return settings.admin_token.get_secret_value() if settings.admin_token else None


def _keep_loading(models: Sequence[SpecModel], every: float) -> None:
    """Retry models that could not load (registry not reachable yet, alias not set yet)."""
    waiting = list(models)
    while waiting:
        time.sleep(every)
        waiting = [m for m in waiting if not m.ready and not m.load()]
