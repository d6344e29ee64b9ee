"""A stand-in for the KFP API server that checks every request against the published v2beta1 API.

The routes, their query parameters, body parameter and response type are read from the generated
client of the ``kfp-server-api`` package (its ``*_with_http_info`` methods); bodies and filters are
built into its models with client-side validation on, so an unknown field, a wrong type or a
value outside an enum is refused with a 400 naming it, as a request the real server would not
understand. JSON names are accepted as the proto3 JSON mapping accepts them: the models' names
and their lowerCamelCase forms (kfp's own client sends filters as ``stringValue``).

It keeps experiments and runs in memory and implements the calls ``kfp.Client`` makes to submit:
experiments (create, get, list with a name filter), runs (create, get, list by experiment and
filter) and health. Anything else answers 501 and is recorded as unhandled.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import kfp_server_api
from kfp_server_api import models

CONFIG = kfp_server_api.Configuration()
CONFIG.client_side_validation = True
SERIALIZER = kfp_server_api.ApiClient()


# The proto3 JSON mapping also accepts an enum by number; kfp's client sends filter operations so.
# Numbers of the Operation enum of KFP's backend/api/v2beta1/filter.proto.
ENUM_NUMBERS = {
    "V2beta1PredicateOperation": {
        0: "OPERATION_UNSPECIFIED", 1: "EQUALS", 2: "NOT_EQUALS", 3: "GREATER_THAN", 5: "GREATER_THAN_EQUALS",
        6: "LESS_THAN", 7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING",
    }
}  # fmt: skip


class Invalid(ValueError):
    """A request the API does not accept."""


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    pattern: re.Pattern[str]
    query: frozenset[str]
    body: tuple[str, str] | None  # (parameter, model)
    response: str | None


def _routes() -> list[Route]:
    found = []
    for api in (kfp_server_api.ExperimentServiceApi, kfp_server_api.RunServiceApi, kfp_server_api.HealthzServiceApi):
        for name, method in inspect.getmembers(api, inspect.isfunction):
            if not name.endswith("_with_http_info"):
                continue
            source = inspect.getsource(method)
            call = re.search(r"call_api\(\s*'([^']+)', '([A-Z]+)'", source)
            params = re.search(r"all_params = \[([^\]]*)\]", source)
            if not call or not params:
                continue
            path, verb = call.groups()
            names = re.findall(r"'(\w+)'", params[1])
            in_path = set(re.findall(r"\{(\w+)\}", path))
            body = re.search(r"body_params = local_var_params\['(\w+)'\]", source)
            body_type = re.search(rf":type {body[1]}: (\w+)", source) if body else None
            response = re.search(r"response_type='(\w+)'", source)
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape(path)) + "$")
            query = frozenset(n for n in names if n not in in_path and (not body or n != body[1]))
            found.append(
                Route(
                    name.removesuffix("_with_http_info"),
                    verb,
                    pattern,
                    query,
                    (body[1], body_type[1]) if body and body_type else None,
                    response[1] if response else None,
                )
            )
    return found


ROUTES = _routes()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def build(kind: str, value: Any, where: str) -> Any:
    """``value`` (JSON) as the model type ``kind`` of kfp_server_api, or :class:`Invalid`."""
    if value is None:
        return None
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected a list")
        return [build(kind[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind.startswith("dict("):
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected an object")
        inner = kind[5:-1].split(", ", 1)[1]
        return {k: build(inner, v, f"{where}.{k}") for k, v in value.items()}
    simple = {"str": str, "bool": bool, "float": (int, float), "object": object, "datetime": str}
    if kind in simple:
        if not isinstance(value, simple[kind]) or (kind == "float" and isinstance(value, bool)):
            raise Invalid(f"{where}: expected {kind}, got {type(value).__name__}")
        return value
    if kind == "int":  # int64 travels as a JSON string in the proto3 mapping
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
        ):
            raise Invalid(f"{where}: expected an integer")
        return int(value)
    cls = getattr(models, kind, None)
    if cls is None:
        raise Invalid(f"{where}: unknown model {kind}")
    if getattr(cls, "allowable_values", None) is not None:  # an enum
        if isinstance(value, int) and not isinstance(value, bool):
            value = ENUM_NUMBERS.get(kind, {}).get(value, value)
        if value not in cls.allowable_values:
            raise Invalid(f"{where}: {value!r} is not one of {sorted(cls.allowable_values)}")
        return value
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected a {kind} object")
    names = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    names |= {_camel(json_name): attr for json_name, attr in list(names.items())}
    kwargs = {}
    for key, item in value.items():
        if key not in names:
            raise Invalid(f"{where}.{key}: not a field of {kind}")
        attr = names[key]
        kwargs[attr] = build(cls.openapi_types[attr], item, f"{where}.{key}")
    try:
        return cls(**kwargs, local_vars_configuration=CONFIG)
    except ValueError as exc:
        raise Invalid(f"{where}: {exc}") from exc


@dataclass
class Request:
    route: str
    query: dict[str, str]
    body: Any


@dataclass
class KfpApi:
    """The server's state and what it was asked."""

    experiments: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, verb: str, url: str, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(url)
        for route in ROUTES:
            hit = route.pattern.match(parts.path)
            if route.method != verb or not hit:
                continue
            try:
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                unknown = set(query) - route.query
                if unknown:
                    raise Invalid(f"query parameter {sorted(unknown)} not accepted by {route.name}")
                body = None
                if route.body:
                    body = build(route.body[1], json.loads(raw or b"null"), route.body[0])
                    if body is None:
                        raise Invalid(f"{route.name}: a {route.body[1]} body is required")
                if "filter" in query:
                    query_filter = build("V2beta1Filter", json.loads(query["filter"]), "filter")
                else:
                    query_filter = None
            except (Invalid, ValueError) as exc:
                self.refused.append(f"{verb} {parts.path}: {exc}")
                return 400, {"error": str(exc), "code": 3}
            with self.lock:
                self.requests.append(Request(route.name, query, body))
                try:
                    answer = self._answer(route.name, hit.groupdict(), query, body, query_filter)
                except Invalid as exc:
                    self.refused.append(f"{verb} {parts.path}: {exc}")
                    return 400, {"error": str(exc), "code": 3}
            if answer is None:
                self.unhandled.append(route.name)
                return 501, {"error": f"{route.name} is not implemented by the stand-in", "code": 12}
            status, model = answer
            return status, SERIALIZER.sanitize_for_serialization(model)
        self.unhandled.append(f"{verb} {parts.path}")
        return 404, {"error": f"no v2beta1 route {verb} {parts.path}", "code": 5}

    def _answer(
        self, name: str, path: dict[str, str], query: dict[str, str], body: Any, flt: Any
    ) -> tuple[int, Any] | None:
        now = datetime.now(UTC)
        if name == "healthz_service_get_healthz":
            return 200, models.V2beta1GetHealthzResponse(multi_user=False)
        if name == "experiment_service_create_experiment":
            if not body.display_name:
                return 400, models.GoogleRpcStatus(code=3, message="experiment display_name is empty")
            body.experiment_id, body.created_at, body.storage_state = str(uuid.uuid4()), now, "AVAILABLE"
            self.experiments[body.experiment_id] = body
            return 200, body
        if name == "experiment_service_get_experiment":
            found = self.experiments.get(path["experiment_id"])
            return (200, found) if found else (404, models.GoogleRpcStatus(code=5, message="experiment not found"))
        if name == "experiment_service_list_experiments":
            hits = [e for e in self.experiments.values() if _passes(e, flt)]
            return 200, models.V2beta1ListExperimentsResponse(experiments=hits, total_size=len(hits))
        if name == "run_service_create_run":
            problems = []
            if not body.display_name:
                problems.append("display_name is empty")
            if body.experiment_id not in self.experiments:
                problems.append(f"experiment {body.experiment_id!r} does not exist")
            if not body.pipeline_spec and not body.pipeline_version_reference:
                problems.append("neither pipeline_spec nor pipeline_version_reference")
            if problems:
                return 400, models.GoogleRpcStatus(code=3, message="; ".join(problems))
            body.run_id, body.created_at, body.state = str(uuid.uuid4()), now, "PENDING"
            self.runs[body.run_id] = body
            return 200, body
        if name == "run_service_get_run":
            found = self.runs.get(path["run_id"])
            return (200, found) if found else (404, models.GoogleRpcStatus(code=5, message="run not found"))
        if name == "run_service_list_runs":
            hits = [
                r
                for r in self.runs.values()
                if query.get("experiment_id") in (None, "", r.experiment_id) and _passes(r, flt)
            ]
            size = int(query.get("page_size") or 0) or len(hits)
            return 200, models.V2beta1ListRunsResponse(runs=hits[:size], total_size=len(hits))
        return None

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, verb: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = api.handle(verb, self.path, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def do_DELETE(self) -> None:
                self._reply("DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"


def _passes(item: Any, flt: Any) -> bool:
    """The EQUALS / NOT_EQUALS string predicates of a filter (what name look-ups send)."""
    for predicate in (flt.predicates or []) if flt else []:
        if predicate.operation not in ("EQUALS", "NOT_EQUALS") or predicate.string_value is None:
            raise Invalid(f"filter: the stand-in evaluates string EQUALS/NOT_EQUALS only, got {predicate}")
        value = getattr(item, {"name": "display_name"}.get(predicate.key, predicate.key), None)
        if (value == predicate.string_value) != (predicate.operation == "EQUALS"):
            return False
    return True
