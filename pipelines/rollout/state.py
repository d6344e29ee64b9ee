"""The rollout-relevant state of an InferenceService (pure): names, annotations, and
:class:`Serving`, read from the live object. :mod:`.plan` decides, :mod:`.readiness` judges what
the controller made, :mod:`.patches` writes; everything that talks to a cluster, MLflow or files
lives in the other modules.

Two KServe APIs carry a canary, chosen by the ``serving.kserve.io/deploymentMode`` annotation:

* **Knative** (``Serverless`` before KServe 0.16): ``spec.predictor.canaryTrafficPercent``. The
  spec names the new version; Knative splits between its latest ready revision and the last
  rolled-out one, whose model URI we remember in ``constructos.io/stable-model-uri``.
* **Standard** (``RawDeployment`` before 0.16; KServe >= 0.20): ``spec.canary``, a list of named
  predictors with ``trafficPercent``. Each entry becomes its own Deployment and Service
  (``<isvc>-<name>-predictor``), while ``spec.predictor`` keeps the stable version; the gateway's
  HTTPRoute weights the two Services. We manage one entry, named ``v<version>``.

Blue-green is the same machinery with two shares only: the new version at 0% (reachable on its
own Service or revision URL for a smoke test), then 100% at once (``switch``), the old one kept
running until ``promote`` retires it or ``rollback`` switches back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE = "constructos-ml"
URI_ARG = "--model_uri="
STORAGE_URI_ENV = "STORAGE_URI"  # KServe's storage URI of a custom container, kept equal to --model_uri
STABLE_ANNOTATION = "constructos.io/stable-model-uri"
PERCENT_ANNOTATION = "constructos.io/canary-percent"
STRATEGY_ANNOTATION = "constructos.io/rollout-strategy"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
CANARY_MODES = ("Knative", "Serverless")  # Serverless: KServe < 0.16's name of Knative mode
STANDARD_MODES = ("Standard", "RawDeployment")  # RawDeployment: < 0.16's name (KServe's webhook rewrites it)
CHAMPION, CHALLENGER = "champion", "challenger"
CANARY, BLUE_GREEN = "canary", "blue-green"
STRATEGIES = (CANARY, BLUE_GREEN)
COMMANDS = ("status", "start", "step", "switch", "smoke", "promote", "rollback", "pin", "sync", "analyze", "auto")

Resource = dict[str, Any]


class RolloutError(Exception):
    """A rollout that cannot be done from the current state."""


def isvc_name(model: str) -> str:
    """credit_risk -> credit-risk (Kubernetes names take no underscores)."""
    return model.replace("_", "-")


def version_uri(model: str, version: str) -> str:
    return f"models:/{model}/{version}"


def uri_version(uri: str) -> str | None:
    """The registry version a ``models:/<name>/<version>`` URI pins (None for an alias)."""
    match = re.fullmatch(r"models:/[^/@]+/(\d+)", uri)
    return match.group(1) if match else None


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise RolloutError(f"canary percent {percent} is outside 0-100")
    return percent


def is_standard(mode: str | None) -> bool:
    return mode in STANDARD_MODES


def predictor_service(isvc: str, name: str | None = None) -> str:
    """KServe's Deployment/Service name of a predictor (``constants.PredictorServiceName``)."""
    return f"{isvc}-{name}-predictor" if name else f"{isvc}-predictor"


@dataclass(frozen=True)
class Serving:
    """The rollout-relevant slice of an InferenceService."""

    model_uri: str
    """Knative: the spec's model URI (during a canary: the canary's). Standard: the stable predictor's."""
    canary_percent: int | None = None
    """Knative: ``canaryTrafficPercent``; Standard: the ``spec.canary`` entry's ``trafficPercent``.
    None: no canary share (Knative: the latest ready revision takes all traffic)."""
    stable_uri: str | None = None
    """While a rollout runs: the model URI it returns to on rollback (annotation)."""
    default_percent: int = 10
    """The canary share ``start`` uses when none is given (per model, set by the overlay)."""
    mode: str | None = "Knative"
    """KServe deployment mode (annotation): Knative reads ``canaryTrafficPercent``, Standard ``spec.canary``."""
    canary_uri: str | None = None
    """Standard: the model URI of the ``spec.canary`` entry (None: no entry)."""
    canary_name: str | None = None
    """Standard: the entry's ``predictor.name`` (its Deployment is ``<isvc>-<name>-predictor``)."""
    canary_replicas: int | None = None
    """Standard: the entry's fixed ``minReplicas`` (KServe gives a canary no autoscaler)."""
    strategy: str | None = None
    """``blue-green`` while a blue-green rollout runs (annotation); None for a canary or nothing."""
    min_replicas: int = field(default=1, compare=False)
    """The stable predictor's ``minReplicas`` (context for the canary's size, never changed here)."""

    @property
    def standard(self) -> bool:
        return is_standard(self.mode)

    @property
    def canary_running(self) -> bool:
        if self.standard:
            return self.canary_uri is not None or self.stable_uri is not None
        return self.stable_uri is not None or self.canary_percent is not None

    @property
    def challenger_uri(self) -> str | None:
        """The version on trial (None: no rollout runs)."""
        if not self.canary_running:
            return None
        return self.canary_uri if self.standard else self.model_uri

    @classmethod
    def from_isvc(cls, isvc: Resource) -> Serving:
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        spec = isvc["spec"]
        predictor = spec["predictor"]
        mode = annotations.get(MODE_ANNOTATION)
        state = cls(
            model_uri=model_uri_of(predictor["containers"][0]),
            canary_percent=None if is_standard(mode) else predictor.get("canaryTrafficPercent"),
            stable_uri=annotations.get(STABLE_ANNOTATION),
            default_percent=int(annotations.get(PERCENT_ANNOTATION, 10)),
            mode=mode,
            strategy=annotations.get(STRATEGY_ANNOTATION),
            min_replicas=int(predictor.get("minReplicas", 1)),
        )
        entries = spec.get("canary") or []
        if not is_standard(mode) or not entries:
            return state
        if len(entries) > 1:
            names = [e.get("predictor", {}).get("name") for e in entries]
            raise RolloutError(f"{isvc['metadata'].get('name')}: {len(entries)} canaries {names}; this tool runs one")
        entry = entries[0]
        canary = entry.get("predictor") or {}
        containers = canary.get("containers") or predictor["containers"]  # KServe merges the entry onto the stable
        return replace(
            state,
            canary_uri=model_uri_of(containers[0]),
            canary_name=canary.get("name"),
            canary_percent=int(entry.get("trafficPercent", 0)),
            canary_replicas=canary.get("minReplicas"),
        )


def model_uri_of(container: Resource) -> str:
    for arg in [*container.get("command", []), *container.get("args", [])]:
        if str(arg).startswith(URI_ARG):
            return str(arg)[len(URI_ARG) :]
    raise RolloutError(f"container {container.get('name')!r} has no {URI_ARG} argument")
