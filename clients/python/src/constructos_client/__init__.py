"""constructos-client: call ConstructOS models from a Django service and publish ERP rows.

The prediction client needs the standard library only; the publisher
(:mod:`constructos_client.publisher`) needs the ``publish`` extra (kafka-python, PyYAML).
"""

from constructos_client.breaker import CircuitBreaker
from constructos_client.client import NO_FALLBACK, CallEvent, Client, Prediction
from constructos_client.errors import (
    CircuitOpen,
    ConnectionFailed,
    InvalidRow,
    ModelNotFound,
    PlatformError,
    ServerError,
    Timeout,
    Unavailable,
)

__version__ = "0.1.0"
__all__ = [
    "NO_FALLBACK",
    "CallEvent",
    "CircuitBreaker",
    "CircuitOpen",
    "Client",
    "ConnectionFailed",
    "InvalidRow",
    "ModelNotFound",
    "PlatformError",
    "Prediction",
    "ServerError",
    "Timeout",
    "Unavailable",
    "__version__",
]
