"""Shared fixtures: small trained models saved as MLflow model directories (skops, no pickle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import save_trained_model

pytest_plugins = ["tests.kafka_broker"]  # real-broker fixtures: kafka_broker, kafka_settings


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained model directory per model, shared by the whole session."""
    root = tmp_path_factory.mktemp("models")
    return {name: save_trained_model(name, root / name) for name in ("credit_risk", "stock_demand", "lead_score")}
