"""The one serving error: what the caller must fix (or wait for), with its HTTP status.

Validation, the models, the V2 routes and the admin routes raise :class:`ServingError`; it is
turned into an answer once per transport: HTTP by :func:`predictors.protocol.http_edges.serving_error`
(and the fast infer path's :func:`~predictors.protocol.http_edges.send_error`), gRPC by
:data:`predictors.endpoints.grpc_v2.GRPC_CODES`. It subclasses KServe's ``InvalidInput`` so that KServe's own
code paths (and its request counting) treat it as a client error, never as a 500.
"""

from __future__ import annotations

from kserve.errors import InvalidInput

from feature_specs import InvalidFeature
from predictors.observability import metrics


class ServingError(InvalidInput):
    """A request answered with ``status`` and ``{"error": message}``; the message names the field."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def refused(model: str, exc: InvalidFeature) -> ServingError:
    """A row that breaks the model's feature contract: counted by field, answered with a 400."""
    metrics.VALIDATION_FAILURES.labels(model, exc.field).inc()
    return ServingError(str(exc))
