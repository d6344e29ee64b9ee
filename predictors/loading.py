"""Load a trained model: an MLflow URI (``models:/<m>@<alias>``, ``models:/<m>/<version>``) or a
local MLflow model directory. The artefact is the MLflow sklearn model the training pipeline logs
(skops format, no pickle): the shared transform + estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feature_specs.reference import REFERENCE_FILE, read_reference
from feature_specs.transform import SKOPS_TRUSTED_TYPES


@dataclass
class LoadedModel:
    pipeline: Any  # the fitted sklearn Pipeline
    version: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    #: training reference statistics (``reference.json``), where the load-time ONNX check probes
    reference: dict[str, Any] | None = None


class NoChampion(LookupError):
    """The registry has no such model or alias: nothing was trained (or promoted) yet."""


def _resolve_registry_version(uri: str) -> str:
    """``models:/name@alias`` or ``models:/name/3`` -> the version number as text."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise NoChampion(
                f"no version of {name} has the alias @{alias} in {mlflow.get_tracking_uri()}: "
                f"train it first (make pipeline MODEL={name})"
            ) from None
    name, _, version = ref.partition("/")
    if version.isdigit():
        return version
    raise ValueError(f"unsupported model URI '{uri}': use models:/<name>@<alias> or models:/<name>/<version>")


def load_model(uri: str) -> LoadedModel:
    """Load from ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a local directory."""
    import mlflow.artifacts
    from mlflow.models import Model

    if uri.startswith("models:/"):
        version = _resolve_registry_version(uri)
        name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    else:
        local = Path(uri)
        if not (local / "MLmodel").is_file():
            raise FileNotFoundError(f"{uri}: not an MLflow model directory (no MLmodel file)")
        version = ""
    mlmodel = Model.load(str(local / "MLmodel"))
    metadata = mlmodel.metadata or {}
    version = version or str(metadata.get("model_version") or local.name)
    pipeline = _load_skops(local, mlmodel.flavors.get("sklearn", {}))
    reference = read_reference(local) if (local / REFERENCE_FILE).is_file() else None
    return LoadedModel(pipeline, version, uri, metadata, reference)


def _load_skops(local: Path, flavor: dict[str, Any]) -> Any:
    """The fitted pipeline from the model's skops file, trusting only the types *we* list.

    MLflow would trust whatever list the model's own MLmodel file carries; a crafted artefact
    could widen it. Pickle formats are refused outright.
    """
    import skops.io

    if flavor.get("serialization_format") != "skops":
        raise ValueError(f"{local}: sklearn model not saved with skops (found {flavor.get('serialization_format')!r})")
    return skops.io.load(local / flavor.get("pickled_model", "model.skops"), trusted=SKOPS_TRUSTED_TYPES)
