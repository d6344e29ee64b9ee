"""Every knob of the training side (pipelines, Kafka trigger, monitoring) in one place.

Environment variables use the prefix ``CONSTRUCTOS_`` (e.g. ``CONSTRUCTOS_DATA_DIR``); the
widely known ``MLFLOW_TRACKING_URI`` and ``KAFKA_BOOTSTRAP`` are read under their own names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from predictors.kafka_settings import KafkaSettings


class Settings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    data_dir: Path = Path("data")
    """Local state: landing store, MLflow store (sqlite + artifacts), pipeline outputs."""

    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CONSTRUCTOS_MLFLOW_TRACKING_URI")
    )
    """MLflow tracking server or store; default: sqlite under ``data_dir``."""

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
    trigger_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the trigger's ``/metrics`` and ``/healthz`` (0: off; the Deployment uses 9100)."""

    pipeline_runner: Literal["local", "kfp"] = "local"
    """Where training runs go: ``local`` (kfp.local in this process) or ``kfp`` (a KFP endpoint)."""
    kfp_host: str | None = None
    """Kubeflow Pipelines API endpoint for ``pipeline_runner=kfp``."""

    image: str = "ghcr.io/constructos/ml-platform:0.1.0"
    """The platform image the pipeline components and InferenceServices run."""

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def trigger_state_path(self) -> Path:
        return self.data_dir / "trigger" / "state.json"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlflow" / "artifacts").resolve()


@cache
def get_settings() -> Settings:
    return Settings()
