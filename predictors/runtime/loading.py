"""Load a trained model: an MLflow URI (``models:/<m>@<alias>``, ``models:/<m>/<version>``, a logged
model ``models:/<model_id>``) or a local MLflow model directory. The artefact is the MLflow sklearn
model the training pipeline logs: the shared transform + estimator, in skops format.

This is the one door through which training (evaluate), serving and the benchmarks load a model,
and it never unpickles: the skops file is loaded with *our* allow-list of types
(:data:`feature_specs.transform.SKOPS_TRUSTED_TYPES`, skops' untrusted-type check), from inside the
model directory only. Any other format, an unlisted type or a file name leading out of the
directory is refused with :class:`UnsafeModel` (a ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feature_specs.reference import REFERENCE_FILE, read_reference
from feature_specs.transform import SKOPS_TRUSTED_TYPES


class UnsafeModel(ValueError):
    """The artefact is not one this platform loads (not skops, untrusted types, a path outside)."""


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

    ref = uri.removeprefix("models:/")
    if uri.startswith("models:/") and ("@" in ref or "/" in ref):
        version = _resolve_registry_version(uri)
        name = ref.split("@")[0].split("/")[0]
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    elif uri.startswith(("models:/", "runs:/")):  # a logged model (its id) or a run's artefact
        local, version = Path(mlflow.artifacts.download_artifacts(uri)), ""
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
    could widen it. Pickle formats are refused outright, and so is a file outside ``local``.
    """
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    if flavor.get("serialization_format") != "skops":
        found = flavor.get("serialization_format")
        raise UnsafeModel(f"{local}: sklearn model not saved with skops (found {found!r}); pickle is never loaded")
    name = str(flavor.get("pickled_model", "model.skops"))
    path = (local / name).resolve()
    if not path.is_relative_to(local.resolve()) or not path.is_file():
        raise UnsafeModel(f"{local}: model file {name!r} is not a file inside the model directory")
    try:
        return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED_TYPES))
        raise UnsafeModel(f"{local}: model holds types not on the allow-list: {', '.join(untrusted)}") from exc
