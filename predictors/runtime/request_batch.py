"""What travels through a model's hooks: the query-string call, the validated batch and the named outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Output = tuple[str, str, np.ndarray]  # name, V2 datatype, values


@dataclass(frozen=True)
class QueryRequest:
    """A query-string call: ``GET /api/v1/predict/<model>?feature=value&…``."""

    params: Mapping[str, str]


@dataclass
class RequestBatch:
    """A validated request on its way through the hooks."""

    columns: dict[str, np.ndarray]
    rows: int
    protocol: str  # "v2", "v1" or "query"
    request_id: str
    scores: np.ndarray | None = None
    outputs: tuple[str, ...] = ()  # V2 "outputs": the subset the caller asked for (empty: all)
