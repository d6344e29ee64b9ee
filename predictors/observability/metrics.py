"""Prometheus metrics of the predictors, beside KServe's latency histograms on ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from kserve.metrics import PREDICT_HIST_TIME
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "constructos_requests_total",
    "Scoring requests by model, version, protocol and outcome (ok, invalid_input, error).",
    ["model", "version", "protocol", "outcome"],
)
ROWS = Counter("constructos_rows_scored_total", "Rows scored.", ["model", "version", "role"])
VALIDATION_FAILURES = Counter(
    "constructos_validation_failures_total", "Requests refused, by the field that was wrong.", ["model", "field"]
)
SCORES = Histogram(
    "constructos_prediction_score",
    "Predicted probabilities of the classifiers.",
    ["model", "version", "role"],
    buckets=[i / 20 for i in range(1, 21)],
)
VALUES = Histogram(
    "constructos_prediction_value",
    "Predicted values of the regression models.",
    ["model", "version", "role"],
    buckets=[1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000],
)
MODEL_INFO = Gauge(
    "constructos_model_info",
    "1 for the model version loaded in each role (champion serves, challenger shadows).",
    ["model", "version", "role", "runtime", "spec_version"],
)
INFERENCE_LOG_DROPPED = Counter(
    "constructos_inference_log_dropped_total", "Inference-log records dropped (queue full or broker away).", ["model"]
)
SHADOW_SECONDS = Histogram(
    "constructos_shadow_seconds", "Time to score the shadow version, off the latency path.", ["model", "version"]
)


# Label lookups cost microseconds on every request: the children are looked up once per label set.
@cache
def requests(model: str, version: str, protocol: str, outcome: str) -> Any:
    return REQUESTS.labels(model, version, protocol, outcome)


@contextmanager
def counted(model: str, version: str, protocol: str, client_error: type[Exception]) -> Iterator[None]:
    """Count one request by its outcome: ``ok``, ``invalid_input`` (``client_error``) or ``error``."""
    outcome = "ok"
    try:
        yield
    except client_error:
        outcome = "invalid_input"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        requests(model, version, protocol, outcome).inc()


@cache
def predict_seconds(model: str) -> Any:
    """KServe's own ``request_predict_seconds`` of ``model`` (the scoring time of each request)."""
    return PREDICT_HIST_TIME.labels(model)


@cache
def scored(model: str, version: str, role: str, classifier: bool) -> tuple[Any, Any]:
    histogram = SCORES if classifier else VALUES
    return ROWS.labels(model, version, role), histogram.labels(model, version, role)
