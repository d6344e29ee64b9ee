"""Load a trained model (MLflow URI or local MLflow model directory) and score validated columns.

The artefact is the MLflow sklearn model the training pipeline logs (skops format, no pickle):
the shared transform + estimator. For serving, the fitted pipeline is converted once to ONNX
and run with ONNX Runtime (about 100x faster per 1-row call than sklearn on a DataFrame); the
conversion is checked against sklearn's own scores at load time and dropped if they differ.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_specs import FeatureSpec, Validator
from feature_specs.transform import SKOPS_TRUSTED_TYPES

logger = logging.getLogger(__name__)

#: largest relative/absolute difference accepted between ONNX and sklearn scores.
RTOL, ATOL = 1e-4, 1e-5


@dataclass
class LoadedModel:
    pipeline: Any  # the fitted sklearn Pipeline
    version: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None


def _resolve_registry_version(uri: str) -> str:
    """``models:/name@alias`` or ``models:/name/3`` -> the version number as text."""
    from mlflow import MlflowClient

    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
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
    reference_file = local / "reference.json"
    reference = json.loads(reference_file.read_text()) if reference_file.is_file() else None
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


def _to_onnx(spec: FeatureSpec, pipeline: Any) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    inputs = [(f.name, FloatTensorType([None, 1]) if f.numeric else StringTensorType([None, 1])) for f in spec.features]
    options = {id(pipeline): {"zipmap": False}} if spec.is_classifier else None
    return convert_sklearn(pipeline, initial_types=inputs, options=options, target_opset={"": 17, "ai.onnx.ml": 3})


class Scorer:
    """Scores validated columns -> P(positive) for classifiers, the prediction for regression."""

    def __init__(self, spec: FeatureSpec, pipeline: Any, *, use_onnx: bool = True) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self._session: Any = None
        self._numeric = [f.name for f in spec.features if f.numeric]
        self._text = [f.name for f in spec.features if not f.numeric]
        if use_onnx:
            self._session = self._checked_session()
        self.runtime = "onnxruntime" if self._session is not None else "sklearn"

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self._sklearn(columns) if self._session is None else self._onnx(self._session, columns)

    def _onnx(self, session: Any, columns: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: columns[name].astype(np.float32).reshape(-1, 1) for name in self._numeric}
        feed |= {name: columns[name].astype(str).reshape(-1, 1) for name in self._text}
        out = session.run(None, feed)
        scores = (out[1][:, 1] if self.spec.is_classifier else out[0].ravel()).astype(np.float64)
        return np.round(scores, 6)  # float32 inside: digits beyond ~7 significant ones are noise

    def _sklearn(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        frame = pd.DataFrame(columns)
        if self.spec.is_classifier:
            return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)

    def _checked_session(self) -> Any:
        """An ONNX Runtime session that reproduces sklearn's scores on a probe batch, or None."""
        try:
            import onnxruntime as ort

            from feature_specs.synthetic import generate

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # 1-row calls: threads cost more than they save
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                _to_onnx(self.spec, self.pipeline).SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            probe_rows = generate(self.spec.name, 512, seed=12345).frame
            probe = Validator(self.spec, max_batch=len(probe_rows)).columns(probe_rows[self.spec.feature_names])
            fast, exact = self._onnx(session, probe), self._sklearn(probe)
        except Exception as exc:  # any converter gap: serve with sklearn, slower but right
            logger.warning("%s: ONNX conversion unavailable (%s); scoring with scikit-learn", self.spec.name, exc)
            return None
        if not np.allclose(fast, exact, rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(fast - exact)))
            logger.warning(
                "%s: ONNX scores differ from sklearn by up to %.3g; scoring with scikit-learn", self.spec.name, worst
            )
            return None
        return session
