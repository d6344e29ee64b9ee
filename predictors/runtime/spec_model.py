"""SpecModel: a ``kserve.Model`` driven by a feature spec.

One class serves every door into a model — V2 ``infer``, V1 ``:predict`` and the Sales
Service's query-string call — through the same hooks: ``preprocess`` validates against the spec
(a client mistake becomes a :class:`~predictors.protocol.errors.ServingError`: HTTP 400 naming the field),
``predict`` scores, ``postprocess`` names and types the outputs. A model module only names its
spec and may add outputs (:meth:`SpecModel.extra_outputs`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb

from feature_specs import FeatureSpec, InvalidFeature, Validator, load_spec
from predictors.observability import metrics
from predictors.observability.inference_log import InferenceLog
from predictors.protocol.errors import ServingError, refused
from predictors.protocol.tensors import Tensor
from predictors.runtime.batching import MicroBatcher
from predictors.runtime.loading import LoadedModel, load_model
from predictors.runtime.request_batch import Output, QueryRequest, RequestBatch
from predictors.runtime.scoring import Scorer
from predictors.runtime.tensor_inference import batch_from_tensors, batch_from_v2
from predictors.settings import ServingSettings

logger = logging.getLogger(__name__)


class SpecModel(Model):
    """Base predictor: subclasses set ``spec_name`` and may override :meth:`extra_outputs`."""

    spec_name: ClassVar[str]

    def __init__(
        self,
        model_uri: str | None = None,
        *,
        name: str | None = None,
        settings: ServingSettings | None = None,
        inference_log: InferenceLog | None = None,
    ):
        self.spec: FeatureSpec = load_spec(self.spec_name)
        super().__init__(name or self.spec.name)
        self.settings = settings or ServingSettings()
        self.model_uri = model_uri or self.settings.model_uri_template.format(model=self.spec.name)
        self.validator = Validator(self.spec, self.settings.max_batch)
        self.loaded: LoadedModel | None = None
        self.scorer: Scorer | None = None
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.shadow_uri = (
            self.settings.shadow_uri_template.format(model=self.spec.name)
            if self.settings.shadow_uri_template
            else None
        )
        self.shadow: LoadedModel | None = None
        self.shadow_scorer: Scorer | None = None
        self._shadow_pool: ThreadPoolExecutor | None = None
        self.inference_log = inference_log
        if inference_log is not None:  # the drop counter exists (at 0) from the start: a dashboard sees "none"
            metrics.INFERENCE_LOG_DROPPED.labels(self.name)

    # -- lifecycle ----------------------------------------------------------------------

    def load(self) -> bool:
        """Load the model; on failure log why and stay not ready (other models keep serving)."""
        try:
            self.loaded = load_model(self.model_uri)
            self.scorer = Scorer(
                self.spec, self.loaded.pipeline, use_onnx=self.settings.use_onnx, reference=self.loaded.reference
            )
        except Exception as exc:
            logger.error("model %s: cannot load %s: %s: %s", self.name, self.model_uri, type(exc).__name__, exc)
            self.ready = False
            return False
        logger.info("model %s: version %s from %s (%s)", self.name, self.version, self.model_uri, self.scorer.runtime)
        if self.settings.batching:
            wait = self.settings.batch_max_wait_ms / 1000
            self.batcher = MicroBatcher(self.scorer, max_rows=self.settings.batch_max_rows, max_wait=wait)
        self._info("champion", self.loaded, self.scorer)
        if self.shadow_uri:
            self._load_shadow(self.shadow_uri)
        self.ready = True
        return True

    def start(self) -> None:
        """KServe's default marks every model ready at server start; ours is ready once loaded."""

    def _load_shadow(self, uri: str) -> None:
        """Shadow mode: a second version scored on every request, never answering; optional."""
        try:
            self.shadow = load_model(uri)
            self.shadow_scorer = Scorer(
                self.spec, self.shadow.pipeline, use_onnx=self.settings.use_onnx, reference=self.shadow.reference
            )
        except Exception as exc:
            logger.warning("model %s: no shadow version from %s (%s); serving without shadow", self.name, uri, exc)
            return
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-shadow")
        self._info("challenger", self.shadow, self.shadow_scorer)
        logger.info("model %s: shadowing version %s from %s", self.name, self.shadow.version, uri)

    def _info(self, role: str, loaded: LoadedModel, scorer: Scorer) -> None:
        metrics.MODEL_INFO.labels(self.name, loaded.version, role, scorer.runtime, self.spec.version).set(1)

    @property
    def version(self) -> str | None:
        return self.loaded.version if self.loaded else None

    # -- V2 metadata --------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "datatype": f.v2_datatype, "shape": [-1]} for f in self.spec.features]

    def get_output_types(self) -> list[dict[str, Any]]:
        probe = self.outputs(np.zeros(1))
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype, _ in probe]

    @cached_property
    def output_names(self) -> list[str]:
        return [name for name, _, _ in self.outputs(np.zeros(1))]

    # -- hooks --------------------------------------------------------------------------

    def validate(self, payload: Any) -> Any:  # preprocess has already checked everything
        return payload

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> Any:
        protocol = "v2" if isinstance(body, InferRequest) else "query" if isinstance(body, QueryRequest) else "v1"
        # InvalidInput: ServingError, and what KServe's own request decoding raises
        with metrics.counted(self.name, self.version or "", protocol, InvalidInput):
            return await super().__call__(body, headers, verb)

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> RequestBatch:
        try:
            if isinstance(payload, InferRequest):
                return self._from_v2(payload)
            if isinstance(payload, QueryRequest):
                frame = self.validator.query(payload.params)
                columns = {name: frame[name].to_numpy() for name in frame.columns}
                return RequestBatch(columns, 1, "query", _request_id(headers))
            if isinstance(payload, dict) and "instances" in payload:
                instances = payload["instances"]
                if not isinstance(instances, list):
                    raise InvalidFeature("instances", "expected a list of objects")
                if not instances:
                    raise InvalidFeature("instances", "empty batch: at least one row is needed")
                if len(instances) > self.validator.max_batch:
                    raise InvalidFeature(
                        "batch", f"{len(instances)} rows exceed the maximum of {self.validator.max_batch}"
                    )
                frame = self.validator.records(instances)
                columns = {name: frame[name].to_numpy() for name in frame.columns}
                return RequestBatch(columns, len(instances), "v1", _request_id(headers))
        except InvalidFeature as exc:
            raise refused(self.name, exc) from None
        if isinstance(payload, bytes | str):
            raise ServingError("body: expected a JSON object (Content-Type: application/json)")
        raise ServingError('body: expected V1 {"instances": [{feature: value, ...}]} or a V2 inference request')

    def _from_v2(self, request: InferRequest) -> RequestBatch:
        return batch_from_v2(self.validator, self.output_names, request)

    async def infer(self, inputs: Sequence[Tensor], wanted: Sequence[str], request_id: str) -> list[Output]:
        """The V2 path of the platform's own REST and gRPC routes: validate, score, name the
        outputs (only those asked for). A client mistake raises :class:`ServingError`."""
        with metrics.counted(self.name, self.version or "", "v2", ServingError):
            if not self.ready or self.scorer is None:
                raise ServingError(f"model {self.name} is not ready", status=503)
            try:
                batch = batch_from_tensors(self.validator, self.output_names, inputs, wanted, request_id)
            except InvalidFeature as exc:
                raise refused(self.name, exc) from None
            started = time.perf_counter()
            await self.predict(batch)
            metrics.predict_seconds(self.name).observe(time.perf_counter() - started)  # as KServe's own path
            outputs = self._answer(batch)
            return [o for o in outputs if o[0] in batch.outputs] if batch.outputs else outputs

    async def predict(self, batch: RequestBatch, headers: dict[str, str] | None = None) -> RequestBatch:
        if self.scorer is None:
            raise ServingError(f"{self.name}: model is not loaded", 503)
        if batch.rows >= self.settings.offload_rows:
            batch.scores = await asyncio.to_thread(self.scorer, batch.columns)
        elif self.batcher is not None:  # concurrent small requests share one runtime call
            batch.scores = await self.batcher(batch.columns, batch.rows)
        else:  # a 1-row ONNX call costs tens of microseconds: cheaper than a thread hop
            batch.scores = self.scorer(batch.columns)
        return batch

    def postprocess(self, batch: RequestBatch, headers: dict[str, str] | None = None) -> InferResponse | dict[str, Any]:
        outputs = self._answer(batch)
        if batch.protocol == "v2":
            return InferResponse(
                response_id=batch.request_id,
                model_name=self.name,
                model_version=self.version,
                infer_outputs=[
                    InferOutput(name, [batch.rows], datatype, data=values.tolist())
                    for name, datatype, values in outputs
                    if not batch.outputs or name in batch.outputs
                ],
            )
        rows = [
            dict(zip([o[0] for o in outputs], values, strict=True))
            for values in zip(*(o[2].tolist() for o in outputs), strict=True)
        ]
        answer: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        return answer | (rows[0] if batch.protocol == "query" else {"predictions": rows})

    def _answer(self, batch: RequestBatch) -> list[Output]:
        """Named outputs of a scored batch; observed, logged and shadowed on the way out."""
        assert batch.scores is not None
        outputs = self.outputs(batch.scores)
        self._observe("champion", self.version or "", batch.scores)
        self._log("champion", self.version, batch, outputs)
        if self._shadow_pool is not None:
            self._shadow_pool.submit(self._score_shadow, batch)
        return outputs

    def unload(self) -> None:
        """Model repository ``unload``: stop answering; readiness says so at once."""
        self.ready = False
        self.scorer = self.loaded = self.batcher = None

    # -- monitoring ---------------------------------------------------------------------

    def _observe(self, role: str, version: str, scores: np.ndarray) -> None:
        rows, histogram = metrics.scored(self.name, version, role, self.spec.is_classifier)
        rows.inc(len(scores))
        for score in scores.tolist():
            histogram.observe(score)

    def _log(self, role: str, version: str | None, batch: RequestBatch, outputs: list[Output]) -> None:
        if self.inference_log is None:
            return
        self.inference_log.publish(
            {
                "request_id": batch.request_id,
                "model": self.name,
                "model_version": version,
                "role": role,
                "timestamp": datetime.now(UTC).isoformat(),
                "inputs": batch.columns,
                "outputs": {name: values for name, _, values in outputs},
            }
        )

    def _score_shadow(self, batch: RequestBatch) -> None:
        """Score the shadow version after the answer has gone; log it beside the champion."""
        assert self.shadow_scorer is not None and self.shadow is not None
        try:
            started = time.perf_counter()
            scores = self.shadow_scorer(batch.columns)
            metrics.SHADOW_SECONDS.labels(self.name, self.shadow.version).observe(time.perf_counter() - started)
            self._observe("challenger", self.shadow.version, scores)
            self._log("challenger", self.shadow.version, batch, self.outputs(scores))
        except Exception:  # the shadow must never hurt serving
            logger.exception("model %s: shadow scoring failed", self.name)

    # -- outputs ------------------------------------------------------------------------

    def outputs(self, scores: np.ndarray) -> list[Output]:
        """Named, typed outputs: probability + label (classifiers) or prediction, then extras."""
        if self.spec.is_classifier:
            base = [("probability", "FP64", scores), ("label", "BOOL", scores >= self.spec.gate.threshold)]
        else:
            base = [("prediction", "FP64", scores)]
        return base + self.extra_outputs(scores)

    def extra_outputs(self, scores: np.ndarray) -> list[Output]:
        """Model-specific outputs derived from the scores (none by default)."""
        return []


def _request_id(headers: dict[str, str] | None) -> str:
    return (headers or {}).get("x-request-id") or uuid.uuid4().hex
