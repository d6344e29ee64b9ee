"""Every knob of the training side (pipelines, Kafka trigger, monitoring) in one place.

Environment variables use the prefix ``CONSTRUCTOS_`` (e.g. ``CONSTRUCTOS_DATA_DIR``); the
widely known ``MLFLOW_TRACKING_URI`` and ``KAFKA_BOOTSTRAP`` are read under their own names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from platform_settings.kafka import KafkaSettings
from platform_settings.stores import StoreSettings

if TYPE_CHECKING:
    from pipelines.storage import Store


class Settings(KafkaSettings, StoreSettings):
    """``data_dir`` and the MLflow store come from :class:`StoreSettings` (shared with serving)."""

    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    kafka_topic_partitions: int = Field(default=3, gt=0)
    """Partitions of the topics the project creates (more partitions: more trigger replicas)."""
    kafka_replication_factor: int = Field(default=1, gt=0)
    """Replication factor of the topics the project creates (3 on a production cluster)."""
    kafka_retry_max_s: float = Field(default=30.0, gt=0)
    """Longest pause between two attempts to reach an unreachable broker (backoff doubles up to it)."""

    trigger_group: str = "constructos-trigger"
    """Consumer group of the trigger; its replicas share the partitions."""
    trigger_models: list[str] = Field(default_factory=list)
    """Models whose source topics the trigger consumes (JSON list in the environment); empty: all."""
    trigger_max_poll_records: int = Field(default=10_000, gt=0)
    """Records handled (validated, landed, committed) per batch."""
    trigger_max_event_bytes: int = Field(default=64 * 1024, gt=0)
    """Larger events are dead-lettered as oversized."""
    trigger_landing_process: bool = True
    """Land in a child process while the next batch is polled (a second core: ~1.5x the events per
    second); false: land in the trigger's own process."""
    trigger_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the trigger's ``/metrics`` and ``/healthz`` (0: off; the Deployment uses 9100)."""

    trigger_stall_s: float = Field(default=600.0, gt=0)
    """A partition with records waiting and no batch settled for this long fails ``/healthz`` (the
    liveness probe restarts the pod; a store outage that long restarts it too, harmlessly)."""

    trigger_request_cooldown_s: float = Field(default=6 * 3600.0, ge=0)
    """Retrain requests without ``request_id`` for the same model and reason within this long start
    one training (requests with an id: one per id)."""

    trigger_dead_letter_max_bytes: int = Field(default=256 * 1024, gt=0)
    """A dead-letter copy larger than this keeps its first bytes only (with its size and SHA-256)."""
    trigger_dead_letter_attempts: int = Field(default=3, gt=0)
    """Batches in which a record's dead letter may be refused before it is skipped as poison."""

    pipeline_runner: Literal["local", "kfp", "dry-run"] = "local"
    """Where training runs go: ``local`` (kfp.local in this process), ``kfp`` (a KFP endpoint) or
    ``dry-run`` (the launch is recorded, nothing runs: a trigger without a training backend)."""
    kfp_host: str | None = None
    """Kubeflow Pipelines API endpoint for ``pipeline_runner=kfp``."""

    image: str = "ghcr.io/constructos/ml-platform:0.1.0"
    """The platform image the pipeline components and InferenceServices run."""

    landing_uri: str | None = None
    """Landing store: ``file:///folder`` or ``s3://bucket/prefix``; default ``<data_dir>/landing``."""
    artifacts_uri: str | None = None
    """Pipeline artifacts (snapshots, Data Docs, plots): ``file://`` or ``s3://``; default ``<data_dir>/artifacts``."""
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CONSTRUCTOS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    )
    """S3-compatible server for ``s3://`` stores (default: AWS). Credentials: the standard AWS variables."""

    ledger_uri: str | None = None
    """The trigger's ledgers (launch keys, baselines, launch leases, poison records), shared by its
    replicas: ``file:///folder`` or ``s3://bucket/prefix``; default ``<data_dir>/trigger/ledger``."""
    launch_lease_s: float = Field(default=60.0, gt=0)
    """A launch's lease on its key, renewed every third of it while the run is launched: a launcher
    that dies is taken over by another replica after at most this long (keep it >> clock skew)."""

    landing_index_cache_dir: Path | None = None
    """With an ``s3://`` landing store: where a trigger replica caches the landing log it has read
    (SQLite, on local disk; rebuilt from the store when lost); default ``<data_dir>/trigger/landing-log``."""

    @property
    def landing_index_cache(self) -> Path:
        return self.landing_index_cache_dir or self.data_dir / "trigger" / "landing-log"

    @property
    def landing_dir(self) -> Path:
        """The landing folder: ``landing_uri`` when it is a ``file://`` URI or a path, else ``<data_dir>/landing``."""
        uri = self.landing_uri or ""
        if uri.startswith("file://"):
            return Path(urlsplit(uri).path)
        return Path(uri) if uri and "://" not in uri else self.data_dir / "landing"

    def store(self, uri: str | None, default: Path) -> Store:
        """The store at ``uri``, or the local folder ``default``."""
        from pipelines.storage import open_store

        return open_store(uri or default.resolve().as_uri(), self.s3_endpoint_url)

    @property
    def landing_store(self) -> Store:
        return self.store(self.landing_uri, self.landing_dir)

    @property
    def artifacts_store(self) -> Store:
        return self.store(self.artifacts_uri, self.data_dir / "artifacts")

    @property
    def ledger_store(self) -> Store:
        return self.store(self.ledger_uri, self.data_dir / "trigger" / "ledger")


@cache
def get_settings() -> Settings:
    return Settings()
