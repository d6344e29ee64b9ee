"""Serving knobs, read from the environment (prefix ``CONSTRUCTOS_``) and overridable by flags."""

from __future__ import annotations

from pydantic import Field, SecretStr

from platform_settings.kafka import KafkaSettings
from platform_settings.stores import StoreSettings

INFERENCE_LOG_TOPIC = "mlops.inference-log"


class ServingSettings(KafkaSettings, StoreSettings):
    """``data_dir`` and the MLflow store (``tracking_uri``) come from :class:`StoreSettings`."""

    model_uri_template: str = "models:/{model}@champion"
    """Where each model is loaded from when no ``--model_uri`` is given: an MLflow URI or a
    local MLflow model directory; ``{model}`` is replaced by the model name."""

    shadow_uri_template: str | None = None
    """Shadow mode: also score this version (e.g. ``models:/{model}@challenger``) on every
    request, off the latency path; only the primary answers, both are logged."""

    load_retry_seconds: float = Field(default=30.0, ge=0)
    """A model that cannot load is retried this often while the others serve (0: never)."""

    start_not_ready: bool = False
    """Start even when no model could be loaded: the server answers, each model stays not ready
    (readiness 503, the reason in the log at every retry) until it loads. For Kubernetes: a pod
    NotReady with the reason, instead of a crash loop whose back-off delays the first load."""

    max_batch: int | None = Field(default=None, gt=0)
    """Largest batch (rows) one request may carry; default: the spec's ``max_batch``."""

    use_onnx: bool = True
    """Score with ONNX Runtime when the converted model reproduces scikit-learn's scores."""

    offload_rows: int = Field(default=64, gt=0)
    """Batches of at least this many rows are scored in a worker thread, off the event loop."""

    inference_log: bool = False
    """Publish every scored request (inputs, outputs, version, request id) to Kafka topic
    ``mlops.inference-log`` in the background; a broker outage never fails a request."""

    inference_log_queue: int = Field(default=10_000, gt=0)
    """Records held while the broker is slow or away; beyond it records are dropped and counted."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """Largest request body (REST) or message (gRPC) accepted; larger ones get 413 before they
    are read whole."""

    access_log: bool = False
    """One INFO line per HTTP request (uvicorn's access log). Off by default: the request counters
    on ``/metrics`` and the mesh in front of the pods account for every request, and the line
    costs about 7% of a 1-row request."""

    admin_token: SecretStr | None = None
    """Bearer token of the model repository extension (``/v2/repository/...`` index, load,
    unload; gRPC ``RepositoryModelLoad/Unload``). Unset: the extension is off (404)."""

    batching: bool = False
    """Adaptive micro-batching: concurrent small requests to one model are scored in one
    runtime call (answers identical to scoring each alone). Helps at high concurrency."""

    batch_max_rows: int = Field(default=64, gt=0)
    """Largest micro-batch (rows); a request this large is scored alone."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    """How long a micro-batch may wait for company; 0: only requests that arrived together."""
