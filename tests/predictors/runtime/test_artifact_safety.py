"""A model artefact never runs code on load, in evaluation and serving alike (real MLflow store):
a pickle payload behind ``@champion`` is refused without executing, a skops file with a type off the
allow-list is refused, a model file name leading out of the model directory is refused, and no code
path switches MLflow's pickle loading on."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.preprocessing import FunctionTransformer

from feature_specs import load_spec
from feature_specs.synthetic import generate
from pipelines.settings import get_settings
from pipelines.training import mlflow_store
from pipelines.training.steps.evaluate import champion_metrics
from pipelines.training.steps.train import labels, model_input
from predictors.runtime.loading import UnsafeModel, load_model
from tests.kafka_broker import ROOT

MODEL = "credit_risk"


class Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))

    def predict(self, x: Any) -> Any:  # looks like a model to MLflow
        return x


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CONSTRUCTOS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    mlflow_store.configure()
    yield tmp_path
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def register_champion(model: Any, serialization_format: str, **options: Any) -> None:
    with mlflow_store.active_experiment("safety"), mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", serialization_format=serialization_format, **options)
    version = mlflow.register_model(info.model_uri, MODEL)
    MlflowClient().set_registered_model_alias(MODEL, mlflow_store.CHAMPION, version.version)


def holdout() -> tuple[Any, Any]:
    spec = load_spec(MODEL)
    frame = generate(MODEL, 50, seed=1).frame
    return model_input(spec, frame), labels(spec, frame)


def test_a_pickled_champion_is_refused_by_evaluate_without_running_its_payload(store: Path) -> None:
    marker = store / "pwned"
    register_champion(Payload(marker), "cloudpickle")
    assert not marker.exists()  # saving did not trigger it either
    with pytest.raises(UnsafeModel, match=r"not saved with skops.*pickle is never loaded"):
        champion_metrics(load_spec(MODEL), *holdout())
    with pytest.raises(UnsafeModel):  # serving's door is the same one
        load_model(f"models:/{MODEL}@{mlflow_store.CHAMPION}")
    assert not marker.exists()
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in os.environ


def test_a_skops_champion_with_an_untrusted_type_is_refused(store: Path) -> None:
    # the artefact's own MLmodel lists ``eval`` as trusted: ours does not
    register_champion(FunctionTransformer(func=eval), "skops", skops_trusted_types=["builtins.eval"])
    with pytest.raises(UnsafeModel, match=r"not on the allow-list: builtins\.eval"):
        champion_metrics(load_spec(MODEL), *holdout())


def test_a_model_file_outside_the_model_directory_is_refused(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    crafted = tmp_path / "crafted"
    shutil.copytree(model_dirs[MODEL], crafted)
    outside = tmp_path / "elsewhere.skops"
    (crafted / "model.skops").rename(outside)  # a valid model file, but not inside the directory
    mlmodel = yaml.safe_load((crafted / "MLmodel").read_text())
    for escape in ("../elsewhere.skops", str(outside)):
        mlmodel["flavors"]["sklearn"]["pickled_model"] = escape
        (crafted / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        with pytest.raises(UnsafeModel, match="not a file inside the model directory"):
            load_model(str(crafted))
    (crafted / "link.skops").symlink_to(outside)
    mlmodel["flavors"]["sklearn"]["pickled_model"] = "link.skops"
    (crafted / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(UnsafeModel, match="not a file inside the model directory"):
        load_model(str(crafted))


def test_no_code_path_enables_pickle_loading() -> None:
    switch = "ALLOW_" + "PICKLE"
    found = subprocess.run(
        ["git", "grep", "-n", switch, "--", ":!tests/predictors/runtime/test_artifact_safety.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert found.stdout == "", found.stdout
