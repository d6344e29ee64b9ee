"""Serving knobs, read from the environment (prefix ``CONSTRUCTOS_``) and overridable by flags."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    model_uri_template: str = "models:/{model}@champion"
    """Where each model is loaded from when no ``--model_uri`` is given: an MLflow URI or a
    local MLflow model directory; ``{model}`` is replaced by the model name."""

    max_batch: int | None = Field(default=None, gt=0)
    """Largest batch (rows) one request may carry; default: the spec's ``max_batch``."""

    use_onnx: bool = True
    """Score with ONNX Runtime when the converted model reproduces scikit-learn's scores."""

    offload_rows: int = Field(default=64, gt=0)
    """Batches of at least this many rows are scored in a worker thread, off the event loop."""

    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CONSTRUCTOS_MLFLOW_TRACKING_URI")
    )
    """MLflow tracking server / registry for ``models:/`` URIs."""
