"""Score validated columns with a loaded model.

For serving, the fitted pipeline is converted once to ONNX and run with ONNX Runtime (about 100x
faster per 1-row call than sklearn on a DataFrame); the conversion is checked against sklearn's
own scores at load time and dropped if they differ.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from feature_specs import FeatureSpec, Validator

logger = logging.getLogger(__name__)

#: largest relative/absolute difference accepted between ONNX and sklearn scores.
RTOL, ATOL = 1e-4, 1e-5


class FittedTransform:
    """The fitted shared transform, applied with numpy: median fill for numbers, one-hot for
    categories — the parameters come from the trained ColumnTransformer itself, and the result is
    checked against its own ``transform`` at load (see :class:`Scorer`)."""

    def __init__(self, spec: FeatureSpec, transform: Any) -> None:
        numeric = transform.named_transformers_["num"]
        categorical = transform.named_transformers_["cat"]
        self.numeric = [f.name for f in spec.features if f.numeric]
        self.fill = np.asarray(numeric.statistics_, dtype=np.float64)
        self.text = [f.name for f in spec.features if not f.numeric]
        self.slots: list[dict[str, int]] = []  # per category feature: value -> output column
        offset = len(self.numeric)
        for values in categorical.categories_:
            self.slots.append({str(v): offset + i for i, v in enumerate(values)})
            offset += len(values)
        self.width = offset
        if len(self.fill) != len(self.numeric) or len(self.slots) != len(self.text):
            raise ValueError("the fitted transform does not have the shared transform's layout")

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        first = columns[self.numeric[0]] if self.numeric else columns[self.text[0]]
        out = np.zeros((len(first), self.width), dtype=np.float32)
        if self.numeric:
            numbers = np.column_stack([columns[name] for name in self.numeric])
            missing = np.isnan(numbers)
            out[:, : len(self.numeric)] = np.where(missing, self.fill, numbers) if missing.any() else numbers
        for name, slots in zip(self.text, self.slots, strict=True):
            for row, value in enumerate(columns[name]):
                column = slots.get(value)
                if column is not None:  # an unknown category encodes as all zeros, like the encoder
                    out[row, column] = 1.0
        return out


def _estimator_to_onnx(spec: FeatureSpec, estimator: Any, width: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if spec.is_classifier else None
    return convert_sklearn(
        estimator,
        initial_types=[("X", FloatTensorType([None, width]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


class Scorer:
    """Scores validated columns -> P(positive) for classifiers, the prediction for regression.

    Fast path: :class:`FittedTransform` + the estimator compiled to ONNX (one input tensor, one
    ONNX Runtime call). It is used only when it reproduces the sklearn pipeline's scores on a
    probe batch; otherwise the sklearn pipeline scores (slower, same answers).
    """

    def __init__(self, spec: FeatureSpec, pipeline: Any, *, use_onnx: bool = True) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self._fast: tuple[FittedTransform, Any] | None = self._checked_fast_path() if use_onnx else None
        self.runtime = "onnxruntime" if self._fast is not None else "sklearn"

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self._sklearn(columns) if self._fast is None else self._onnx(*self._fast, columns)

    def _onnx(self, transform: FittedTransform, session: Any, columns: dict[str, np.ndarray]) -> np.ndarray:
        out = session.run(self._outputs, {"X": transform(columns)})[0]
        scores = (out[:, 1] if self.spec.is_classifier else out.ravel()).astype(np.float64)
        return np.round(scores, 6)  # float32 inside: digits beyond ~7 significant ones are noise

    def _sklearn(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        frame = pd.DataFrame(columns)
        if self.spec.is_classifier:
            return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)

    def _checked_fast_path(self) -> tuple[FittedTransform, Any] | None:
        try:
            import onnxruntime as ort

            from feature_specs.synthetic import generate

            transform = FittedTransform(self.spec, self.pipeline[0])
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # 1-row calls: threads cost more than they save
            options.inter_op_num_threads = 1
            onnx_model = _estimator_to_onnx(self.spec, self.pipeline[-1], transform.width)
            session = ort.InferenceSession(onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            self._outputs = [names[1] if self.spec.is_classifier else names[0]]
            probe_rows = generate(self.spec.name, 512, seed=12345).frame
            probe = Validator(self.spec, max_batch=len(probe_rows)).columns(probe_rows[self.spec.feature_names])
            same_features = np.allclose(
                transform(probe), self.pipeline[0].transform(pd.DataFrame(probe)).astype(np.float32), equal_nan=True
            )
            fast, exact = self._onnx(transform, session, probe), self._sklearn(probe)
        except Exception as exc:  # any converter gap: serve with sklearn, slower but right
            logger.warning("%s: fast path unavailable (%s); scoring with scikit-learn", self.spec.name, exc)
            return None
        if not same_features or not np.allclose(fast, exact, rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(fast - exact)))
            logger.warning(
                "%s: fast path differs from sklearn (features equal: %s, scores by up to %.3g); using sklearn",
                self.spec.name,
                same_features,
                worst,
            )
            return None
        return transform, session
