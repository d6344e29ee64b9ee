"""deploy: register the model version, set its alias and render (and on a cluster apply) its
InferenceService with the new ``--model_uri`` and the canary share."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from feature_specs.spec import FeatureSpec
from pipelines.training import mlflow_store

log = logging.getLogger(__name__)

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests" / "base"
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: what MLflow's registry stores of a version's description (a VARCHAR(5000) in SQL stores)
DESCRIPTION_LIMIT = 5000


@dataclass(frozen=True)
class Registration:
    version: str
    alias: str


def register_version(
    spec: FeatureSpec,
    model_uri: str,
    *,
    mlflow_run_id: str,
    data_hash: str,
    pipeline_run_id: str,
    metrics: dict[str, float],
    description: str = "",
) -> Registration:
    """A new registered version with lineage tags and ``description`` (the model card); alias
    ``champion`` if there is none yet, else ``challenger`` (promotion to champion is the rollout's
    decision)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow_store.configure()
    tags = {
        "data_hash": data_hash,
        "pipeline_run_id": pipeline_run_id,
        "spec_version": spec.version,
        "mlflow_run_id": mlflow_run_id,
        "metrics": json.dumps({k: round(v, 6) for k, v in metrics.items()}),
    }
    version = mlflow.register_model(model_uri, spec.name, tags=tags)
    has_champion = mlflow_store.version_by_alias(spec.name, mlflow_store.CHAMPION) is not None
    alias = mlflow_store.CHALLENGER if has_champion else mlflow_store.CHAMPION
    client = MlflowClient()
    if description:
        client.update_model_version(spec.name, version.version, description=fit_description(description, mlflow_run_id))
    client.set_registered_model_alias(spec.name, alias, version.version)
    with mlflow.start_run(run_id=mlflow_run_id):
        mlflow.set_tags({"registered_version": str(version.version), "alias": alias})
    log.info("deploy: registered %s version %s as @%s", spec.name, version.version, alias)
    return Registration(str(version.version), alias)


def fit_description(card: str, mlflow_run_id: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card as it fits a version's description: whole, or cut at a line with a pointer to the
    full card logged to the run."""
    if len(card) <= limit:
        return card
    note = f"\n\n(cut to fit: the whole card is model_card.md of MLflow run {mlflow_run_id})\n"
    return card[: card.rfind("\n", 0, limit - len(note))] + note


def _is_model_isvc(doc: Any, model: str) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService":
        return False
    name = doc.get("metadata", {}).get("name")
    containers = doc.get("spec", {}).get("predictor", {}).get("containers", [])
    command = [str(part) for c in containers for part in c.get("command", []) + c.get("args", [])]
    return name in (model, model.replace("_", "-")) or f"--model_name={model}" in command


def template(model: str, image: str) -> dict[str, Any]:
    """The minimal InferenceService used when the manifests have none for ``model``."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": model.replace("_", "-"),
            "annotations": {"serving.kserve.io/deploymentMode": "Knative"},
        },
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        "command": ["python", "-m", "predictors", f"--model_name={model}", "--http_port=8080"],
                        "args": [f"--model_uri=models:/{model}@champion"],
                    }
                ]
            }
        },
    }


def find_isvc(model: str, manifests: Path = MANIFESTS) -> dict[str, Any] | None:
    """The model's InferenceService in the kustomize base, or None."""
    for path in sorted(manifests.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if _is_model_isvc(doc, model):
                return dict(doc)
    return None


def render_isvc(
    base: dict[str, Any], model: str, version: str, canary_percent: int | None, image: str | None = None
) -> dict[str, Any]:
    """``base`` serving ``models:/<model>/<version>`` from ``image`` (the base's image names no tag:
    kustomize adds it); ``canaryTrafficPercent`` when given."""
    isvc = copy.deepcopy(base)
    predictor = isvc["spec"]["predictor"]
    container = predictor["containers"][0]
    if image:
        container["image"] = image
    args = [a for a in container.get("args", []) if not str(a).startswith("--model_uri")]
    container["args"] = [*args, f"--model_uri=models:/{model}/{version}"]
    if canary_percent is None:
        predictor.pop("canaryTrafficPercent", None)
    else:
        if not 0 <= canary_percent <= 100:
            raise ValueError(f"canary percent {canary_percent} is outside 0..100")
        predictor["canaryTrafficPercent"] = canary_percent
    return isvc


def apply_isvc(model: str, version: str, share: int | None) -> str:
    """On a cluster, move the live InferenceService the way ``pipelines.rollout`` does.

    A challenger becomes a canary of ``share`` percent; a first champion is pinned (the service
    serves exactly that version). Only the model URI and canary fields are patched, with a
    conflict check, under the rollout's field manager.
    """
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "skipped: not inside a Kubernetes cluster (the rendered manifest is the artifact)"
    from pipelines.rollout import cluster, state

    namespace = _NAMESPACE_FILE.read_text().strip() if _NAMESPACE_FILE.is_file() else state.NAMESPACE
    if share is None:
        return cluster.pin_version(model, version, namespace=namespace)
    return cluster.start_canary(model, version, share, namespace=namespace)


def deploy_isvc(spec: FeatureSpec, registration: Registration, out: Path, *, canary_percent: int, image: str) -> str:
    """Render the InferenceService for ``registration`` into ``out`` and apply it when on a cluster.

    A new champion (first model) takes all traffic; a challenger gets ``canary_percent`` (< 0:
    the spec's ``rollout.canary_percent``).
    """
    base = find_isvc(spec.name)
    if base is None:  # not rendered yet (`make manifests`): the template, else a minimal one (no manifests/)
        from pipelines.manifests.render import isvc as rendered_isvc

        log.warning("deploy: no InferenceService for %s under %s; rendering its template", spec.name, MANIFESTS)
        base = rendered_isvc(spec) or template(spec.name, image)
    share = None
    if registration.alias == mlflow_store.CHALLENGER:
        share = spec.rollout.canary_percent if canary_percent < 0 else canary_percent
    isvc = render_isvc(base, spec.name, registration.version, share, image)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(isvc, sort_keys=False))
    outcome = apply_isvc(spec.name, registration.version, share)
    log.info(
        "deploy: InferenceService %s -> models:/%s/%s, canary %s; %s",
        isvc["metadata"]["name"],
        spec.name,
        registration.version,
        share,
        outcome,
    )
    return outcome
