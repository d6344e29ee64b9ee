"""Where the platform keeps its state — one default for every entry point (server, pipelines, tools)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    data_dir: Path = Path("data")
    """Local state: landing store, MLflow store (sqlite + artifacts), pipeline outputs."""

    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CONSTRUCTOS_MLFLOW_TRACKING_URI")
    )
    """MLflow tracking server or store; default: ``sqlite:///<data_dir>/mlflow/mlflow.db``."""

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlflow" / "artifacts").resolve()
