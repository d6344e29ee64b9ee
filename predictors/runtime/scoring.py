"""Score validated columns with a loaded model.

For serving, the fitted pipeline is converted once to ONNX (double precision, see
:mod:`predictors.runtime.tree_onnx`) and run with ONNX Runtime (about 100x faster per 1-row call than
sklearn on a DataFrame). At load the conversion is checked against sklearn's own scores on probe
rows built from the spec and the training reference (:mod:`predictors.runtime.probes`); one probe
outside the tolerance and the model is served by sklearn instead. ``Scorer.runtime`` and
``Scorer.check`` say which runtime serves and why.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from feature_specs import FeatureSpec

logger = logging.getLogger(__name__)

#: ONNX is used only if every probe score agrees with sklearn's: |onnx - sklearn| <= ATOL + RTOL * |sklearn|.
#: Both compute in double precision; what remains is summation order (~1e-15 relative).
#: ONNX answers are rounded to this many significant digits (far below the tolerance above, far
#: above float noise). Significant digits, not decimals: 12 decimals of a forecast in the thousands
#: are a few ulps, and a last-ulp difference then still changed about one answer in 150.
SCORE_DIGITS = 12
RTOL, ATOL = 1e-9, 1e-9


class FittedTransform:
    """The fitted shared transform, applied with numpy: median fill for numbers, one-hot for
    categories, row means for derived features — the parameters come from the trained
    ColumnTransformer itself, and the result is checked against its own ``transform`` at load
    (see :class:`Scorer`)."""

    def __init__(self, spec: FeatureSpec, transform: Any) -> None:
        self.numeric = [f.name for f in spec.features if f.numeric]
        self.text = [f.name for f in spec.features if not f.numeric]
        # a part with no columns (a spec without categories, say) is never fitted
        numeric = transform.named_transformers_["num"] if self.numeric else None
        categories = transform.named_transformers_["cat"].categories_ if self.text else []
        self.fill = np.asarray(numeric.statistics_ if numeric is not None else [], dtype=np.float64)
        self.slots: list[dict[str, int]] = []  # per category feature: value -> output column
        offset = len(self.numeric)
        for values in categories:
            self.slots.append({str(v): offset + i for i, v in enumerate(values)})
            offset += len(values)
        # derived features (the spec's ``derived``), after the categories: row means of raw numbers
        # (or of their log1p)
        self.means: list[tuple[int, list[str], bool]] = []
        for name, part, names in transform.transformers_:
            if name in ("num", "cat", "remainder"):
                continue
            self.means.append((offset, list(names), _row_mean_of_log1p(name, part)))
            offset += 1
        self.width = offset
        if len(self.fill) != len(self.numeric) or len(self.slots) != len(self.text):
            raise ValueError("the fitted transform does not have the shared transform's layout")
        if len(self.means) != len(spec.derived):
            raise ValueError("the fitted transform does not have the spec's derived features")

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        first = columns[self.numeric[0]] if self.numeric else columns[self.text[0]]
        out = np.zeros((len(first), self.width), dtype=np.float64)
        if self.numeric:
            numbers = np.array([columns[name] for name in self.numeric], dtype=np.float64).T  # rows x features
            missing = np.isnan(numbers)
            out[:, : len(self.numeric)] = np.where(missing, self.fill, numbers) if missing.any() else numbers
        for name, slots in zip(self.text, self.slots, strict=True):
            for row, value in enumerate(columns[name]):
                column = slots.get(value)
                if column is not None:  # an unknown category encodes as all zeros, like the encoder
                    out[row, column] = 1.0
        for column, names, log1p in self.means:
            values = np.array([columns[name] for name in names], dtype=np.float64).T  # rows x features
            out[:, column] = np.nanmean(np.log1p(values) if log1p else values, axis=1)
        return out


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (0, NaN and infinities as they are)."""
    finite = np.isfinite(values) & (values != 0)
    magnitude = np.floor(np.log10(np.abs(np.where(finite, values, 1.0))))
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.where(finite, np.round(values * scale) / scale, values)


def _row_mean_of_log1p(name: str, part: Any) -> bool:
    """Whether a fitted derived part is the row mean of log1p of its columns (True) or of the
    columns themselves (False); anything else is refused."""
    *before, mean = [step for _, step in part.steps] if hasattr(part, "steps") else [part]
    log1p = [getattr(step, "func", None) for step in before] == [np.log1p] and before[0].kw_args is None
    row_mean = getattr(mean, "func", None) is np.nanmean and mean.kw_args == {"axis": 1, "keepdims": True}
    if not row_mean or (before and not log1p):
        raise ValueError(f"derived part {name!r} is not a row mean")
    return log1p


def _estimator_to_onnx(spec: FeatureSpec, estimator: Any, width: int) -> Any:
    from predictors.runtime.tree_onnx import hist_gradient_boosting_to_onnx

    sigmoid = None
    if type(estimator).__name__ == "CalibratedClassifierCV":  # one sigmoid calibrator (ensemble=False)
        calibrated = estimator.calibrated_classifiers_
        calibrators = calibrated[0].calibrators if len(calibrated) == 1 else []
        if len(calibrators) != 1 or not hasattr(calibrators[0], "a_"):
            raise ValueError("only a single sigmoid calibration (ensemble=False) converts to ONNX")
        sigmoid = (float(calibrators[0].a_), float(calibrators[0].b_))
        estimator = calibrated[0].estimator
    expm1 = False
    if type(estimator).__name__ == "TransformedTargetRegressor":  # the spec's target_transform: log1p
        if estimator.func is not np.log1p or estimator.inverse_func is not np.expm1:
            raise ValueError("only a log1p target transform converts to ONNX")
        estimator, expm1 = estimator.regressor_, True
    offset = None
    if type(estimator).__name__ == "OffsetRegressor":  # the spec's estimator.offset: plus an input column
        estimator, offset = estimator.regressor_, int(estimator.column) % width
    if not hasattr(estimator, "_predictors"):
        raise ValueError(f"{type(estimator).__name__} has no double-precision ONNX converter here")
    return hist_gradient_boosting_to_onnx(
        estimator, width, classifier=spec.is_classifier, sigmoid=sigmoid, expm1=expm1, offset=offset
    )


class Scorer:
    """Scores validated columns -> P(positive) for classifiers, the prediction for regression.

    Fast path: :class:`FittedTransform` + the estimator compiled to ONNX (one input tensor, one
    ONNX Runtime call). It is used only when it reproduces the sklearn pipeline's scores on a
    probe batch; otherwise the sklearn pipeline scores (slower, same answers).
    """

    def __init__(
        self, spec: FeatureSpec, pipeline: Any, *, use_onnx: bool = True, reference: dict[str, Any] | None = None
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.reference = reference  # the training reference (reference.json): where the probes go
        self.check = "ONNX off (use_onnx=false)"
        self._fast: tuple[FittedTransform, Any] | None = self._checked_fast_path() if use_onnx else None
        self.runtime = "onnxruntime" if self._fast is not None else "sklearn"

    def __call__(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self._sklearn(columns) if self._fast is None else self._onnx(*self._fast, columns)

    def _onnx(self, transform: FittedTransform, session: Any, columns: dict[str, np.ndarray]) -> np.ndarray:
        out = session.run(self._outputs, {"X": transform(columns)})[0]
        scores = np.asarray(out[:, 1] if self.spec.is_classifier else out.ravel(), dtype=np.float64)
        # ONNX Runtime's kernels (tree sums, the vectorised Exp) give last-ulp differences that
        # depend on the batch size: 12 significant digits make a row's answer the same alone,
        # batched or micro-batched.
        return round_significant(scores, SCORE_DIGITS)

    def _sklearn(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        frame = pd.DataFrame(columns)
        if self.spec.is_classifier:
            return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)

    def _checked_fast_path(self) -> tuple[FittedTransform, Any] | None:
        try:
            import onnxruntime as ort

            from predictors.runtime.probes import probe_columns, split_thresholds

            transform = FittedTransform(self.spec, self.pipeline[0])
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # 1-row calls: threads cost more than they save
            options.inter_op_num_threads = 1
            onnx_model = _estimator_to_onnx(self.spec, self.pipeline[-1], transform.width)
            session = ort.InferenceSession(onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self._outputs = [session.get_outputs()[0].name]
            probe = probe_columns(self.spec, self.reference, split_thresholds(self.pipeline[-1]))
            expected = self.pipeline[0].transform(pd.DataFrame(probe))
            features_agree = np.array_equal(transform(probe), expected)
            fast, exact = self._onnx(transform, session, probe), self._sklearn(probe)
        except Exception as exc:  # any converter gap: serve with sklearn, slower but right
            self.check = f"ONNX unavailable ({type(exc).__name__}: {exc}); scikit-learn serves"
            logger.warning("%s: %s", self.spec.name, self.check)
            return None
        off = np.abs(fast - exact) > ATOL + RTOL * np.abs(exact)
        if not features_agree or off.any():
            self.check = (
                f"ONNX refused: {int(off.sum())} of {len(exact)} probes differ from scikit-learn by up to "
                f"{float(np.max(np.abs(fast - exact))):.3g} (features equal: {features_agree}); scikit-learn serves"
            )
            logger.warning("%s: %s", self.spec.name, self.check)
            return None
        self.check = f"ONNX Runtime: {len(exact)} probes agree with scikit-learn within rtol {RTOL:g}, atol {ATOL:g}"
        logger.info("%s: %s", self.spec.name, self.check)
        return transform, session
