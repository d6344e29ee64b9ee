"""Every knob of the training side (pipelines, Kafka trigger, monitoring) in one place.

Environment variables use the prefix ``CONSTRUCTOS_`` (e.g. ``CONSTRUCTOS_DATA_DIR``); the
widely known ``MLFLOW_TRACKING_URI`` and ``KAFKA_BOOTSTRAP`` are read under their own names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    data_dir: Path = Path("data")
    """Local state: landing store, MLflow store (sqlite + artifacts), pipeline outputs."""

    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CONSTRUCTOS_MLFLOW_TRACKING_URI")
    )
    """MLflow tracking server or store; default: sqlite under ``data_dir``."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "CONSTRUCTOS_KAFKA_BOOTSTRAP")
    )
    """Kafka bootstrap servers, comma-separated."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security protocol."""
    kafka_sasl_mechanism: str | None = None
    """SASL mechanism, e.g. SCRAM-SHA-512 or PLAIN."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    """SASL password (never logged)."""
    kafka_ssl_cafile: str | None = None
    """CA bundle that signs the brokers' certificates."""

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
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlflow" / "artifacts").resolve()

    def kafka_options(self) -> dict[str, object]:
        """kafka-python client options (bootstrap + security), shared by every client."""
        options: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password,
            }
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options


@cache
def get_settings() -> Settings:
    return Settings()
