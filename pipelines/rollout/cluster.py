"""The live InferenceService, through the Kubernetes API (:class:`Cluster`); the GitOps overlay is
:mod:`pipelines.rollout.overlay`, both :class:`~pipelines.rollout.targets.RolloutTarget`.

**One owner per field.** Online, the rollout writes only its fields — the model URI (inside the
container list, which KServe's CRD makes one atomic field), ``canaryTrafficPercent`` and the
stable-URI annotation — as JSON merge patches under the field manager ``constructos-rollout``,
with the ``resourceVersion`` it read (a concurrent writer makes it a conflict, never an
overwrite). GitOps applies the overlay server-side as ``constructos-gitops`` (``make deploy``):
an apply that would change a field the rollout set fails with a conflict that names it, instead
of silently dropping a running canary; ``rollout sync --overlay ENV`` writes the live rollout
state into the overlay so the next apply agrees with it. In Standard mode the rollout's fields are
the stable container list, ``spec.canary`` (an atomic list in KServe's CRD) and its annotations.

**Waiting** (Standard mode) reads what KServe made, not only what it reports: the predictor
Deployments (``<isvc>-predictor``, ``<isvc>-<canary>-predictor``: rolled out with the expected
model URI, every replica available), ``status.canaryStatuses``, the pods' container states for
the reason of a timeout, and the Gateway API HTTPRoutes (a drained canary has weight 0 in every
route, and the gateway has accepted that generation). The rollout's identity needs ``get`` on
deployments and services and ``list`` on pods and httproutes; without HTTPRoutes (no Gateway API)
a drain is the ``--drain`` pause alone.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pipelines.rollout.patches import merge_patch
from pipelines.rollout.plan import Step, plan_pin, plan_start
from pipelines.rollout.readiness import pod_problems, revision_ready, route_problem, standard_problem
from pipelines.rollout.state import (
    GROUP,
    NAMESPACE,
    PLURAL,
    VERSION,
    Resource,
    RolloutError,
    Serving,
    isvc_name,
    predictor_service,
)

GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"

FIELD_MANAGER = "constructos-rollout"
GITOPS_FIELD_MANAGER = "constructos-gitops"


class Conflict(RolloutError):
    """The InferenceService changed since it was read (HTTP 409): re-read and re-plan."""


class Cluster:
    """The live InferenceService, through the Kubernetes API."""

    def __init__(self, namespace: str, api: Any = None) -> None:
        from kubernetes import client, config

        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # read now, not at import
                except (config.ConfigException, OSError) as e:
                    raise RolloutError(f"no cluster to talk to ({e}); use --overlay ENV for GitOps") from e
            api = client.CustomObjectsApi()
        self.api = api
        self.namespace = namespace

    def _call(self, model: str, method: str, *args: Any, **kwargs: Any) -> Resource:
        from kubernetes.client.exceptions import ApiException

        name = f"InferenceService {self.namespace}/{isvc_name(model)}"
        try:
            obj: Resource = getattr(self.api, method)(
                GROUP, VERSION, self.namespace, PLURAL, isvc_name(model), *args, **kwargs
            )
        except ApiException as e:
            if e.status == 409:
                raise Conflict(f"{name} changed since it was read (resourceVersion conflict)") from e
            if e.status == 404:
                raise RolloutError(f"{name} does not exist") from e
            raise RolloutError(f"{name}: the API server answered {e.status} {e.reason}: {e.body}") from e
        return obj

    def get(self, model: str) -> Resource:
        return self._call(model, "get_namespaced_custom_object")

    def describe(self, model: str, isvc: Resource, target: Serving) -> str:
        return f"patch InferenceService {self.namespace}/{isvc_name(model)}: {json.dumps(merge_patch(isvc, target))}"

    def apply(self, model: str, isvc: Resource, target: Serving) -> str:
        body = merge_patch(isvc, target)
        self._call(model, "patch_namespaced_custom_object", body, field_manager=FIELD_MANAGER)
        return self.describe(model, isvc, target)

    # --- waiting ----------------------------------------------------------------------------

    def _api(self, kind: str) -> Any:
        from kubernetes import client

        return getattr(client, kind)(self.api.api_client)

    def _read(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A read through the typed client as a plain dict; None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            obj = call(*args, **kwargs)
        except ApiException as e:
            if e.status == 404:
                return None
            raise RolloutError(
                f"reading {what} in {self.namespace}: the API server answered {e.status} {e.reason}"
            ) from e
        return self.api.api_client.sanitize_for_serialization(obj)

    def deployments(self, isvc: Resource, target: Serving) -> dict[str, Resource | None]:
        name = isvc["metadata"]["name"]
        names = {predictor_service(name, isvc["spec"]["predictor"].get("name"))}
        if target.canary_name:
            names.add(predictor_service(name, target.canary_name))
        apps = self._api("AppsV1Api")
        return {n: self._read(f"Deployment {n}", apps.read_namespaced_deployment, n, self.namespace) for n in names}

    def pods(self, deployment: str) -> list[Resource]:
        found = self._read(
            "pods", self._api("CoreV1Api").list_namespaced_pod, self.namespace, label_selector=f"app=isvc.{deployment}"
        )
        return list((found or {}).get("items") or [])

    def routes(self) -> list[Resource] | None:
        """The namespace's Gateway API HTTPRoutes; None when the API server has no Gateway API."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.api.list_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes")
        except ApiException as e:
            if e.status == 404:
                return None
            raise RolloutError(f"listing HTTPRoutes in {self.namespace}: {e.status} {e.reason}") from e
        return list(found.get("items") or [])

    def wait(self, model: str, step: Step, timeout_s: float, poll_s: float = 1.0) -> list[str]:
        """Wait until the controller serves what ``step`` says to wait for; raise with the reason."""
        if not (step.wait_ready or step.wait_canary):
            return []
        target, name = step.target, f"InferenceService {self.namespace}/{isvc_name(model)}"
        deadline = time.monotonic() + timeout_s
        if not target.standard:
            while not revision_ready(isvc := self.get(model)):
                if time.monotonic() > deadline:
                    raise RolloutError(
                        f"{model}: the new revision is not ready after {timeout_s:.0f}s; traffic stays on the "
                        f"previous revision (canary at {target.canary_percent}%); run the command again to go on"
                    )
                time.sleep(poll_s)
            revision = isvc["status"]["components"]["predictor"]["latestReadyRevision"]
            return [f"revision {revision} of {name} is ready"]
        while True:
            isvc = self.get(model)
            problem = standard_problem(
                isvc, self.deployments(isvc, target), target, stable=step.wait_ready, canary=step.wait_canary
            )
            if problem is None:
                break
            if time.monotonic() > deadline:
                raise RolloutError(self._timeout(model, isvc, step, problem, timeout_s))
            time.sleep(poll_s)
        done = [f"stable predictor serves {target.model_uri}"] if step.wait_ready else []
        done += [f"canary {target.canary_name} serves {target.canary_uri}"] if step.wait_canary else []
        return [f"{name}: {', '.join(done)}, every replica ready"]

    def _timeout(self, model: str, isvc: Resource, step: Step, problem: str, timeout_s: float) -> str:
        target, name = step.target, isvc["metadata"]["name"]
        pods = []
        if step.wait_canary and target.canary_name:
            pods += pod_problems(self.pods(predictor_service(name, target.canary_name)))
        if step.wait_ready:
            pods += pod_problems(self.pods(predictor_service(name, isvc["spec"]["predictor"].get("name"))))
        why = "; ".join([problem, *pods])
        if step.wait_canary:
            return (
                f"{model}: the canary {target.canary_name} ({target.canary_uri}) is not ready after {timeout_s:.0f}s: "
                f"{why}. It gets no more traffic ({target.canary_percent}%); `rollback` removes it, running the "
                "command again waits on"
            )
        return (
            f"{model}: the stable predictor does not serve {target.model_uri} after {timeout_s:.0f}s: {why}. "
            "Traffic stays where it is; run the command again to go on, or `rollback`"
        )

    def drain(self, model: str, step: Step, drain_s: float, timeout_s: float, poll_s: float = 0.5) -> list[str]:
        """Standard: wait until no HTTPRoute of the InferenceService weights the canary any more and
        the gateway accepted that, then give in-flight requests ``drain_s`` to finish."""
        if not step.drain or not step.target.standard or not step.target.canary_name:
            return []
        service = predictor_service(isvc_name(model), step.target.canary_name)
        deadline = time.monotonic() + timeout_s
        out = []
        while (routes := self.routes()) is not None:
            mine = [r for r in routes if _routes_to(r, isvc_name(model))]
            if (problem := route_problem(mine, service)) is None:
                out.append(
                    f"HTTPRoutes {', '.join(r['metadata']['name'] for r in mine) or '(none)'}: no weight on {service}"
                )
                break
            if time.monotonic() > deadline:
                raise RolloutError(f"{model}: {problem} after {timeout_s:.0f}s; run the command again to go on")
            time.sleep(poll_s)
        else:
            out.append("no Gateway API HTTPRoutes here: the drain is the pause alone")
        time.sleep(drain_s)
        return [*out, f"drained {service} for {drain_s:g}s"]

    def smoke_url(self, model: str) -> str:
        """Where the new version answers on its own, before it has any share of the traffic.
        Standard: its own Service (``<isvc>-<canary>-predictor``, by ClusterIP: reachable from the
        node and the cluster without DNS). Knative: the revision's ``latest`` tag URL (KServe's
        ``serving.kserve.io/enable-tag-routing``)."""
        isvc = self.get(model)
        state = Serving.from_isvc(isvc)
        if not state.canary_running:
            raise RolloutError(f"{model}: no new version is deployed; `start` one first")
        if state.standard and state.canary_name:
            name = predictor_service(isvc_name(model), state.canary_name)
            svc = self._read(f"Service {name}", self._api("CoreV1Api").read_namespaced_service, name, self.namespace)
            if not svc:
                raise RolloutError(f"{model}: Service {name} does not exist (yet)")
            ports = svc["spec"].get("ports") or [{}]
            port = next((p for p in ports if p.get("name") in ("http", "http1")), ports[0]).get("port", 80)
            return f"http://{svc['spec'].get('clusterIP') or f'{name}.{self.namespace}.svc'}:{port}"
        traffic = ((isvc.get("status") or {}).get("components") or {}).get("predictor", {}).get("traffic") or []
        for entry in traffic:
            if entry.get("tag") == "latest" and entry.get("url"):
                return str(entry["url"])
        raise RolloutError(
            f'{model}: no `latest` tag URL in the status (set serving.kserve.io/enable-tag-routing: "true"), '
            "or give --smoke-url"
        )


def _routes_to(route: Resource, isvc: str) -> bool:
    """An HTTPRoute KServe made for the InferenceService ``isvc`` (its name, or a backend of its)."""
    if route["metadata"]["name"] in (isvc, f"{isvc}-predictor"):
        return True
    refs = [ref for rule in route.get("spec", {}).get("rules") or [] for ref in rule.get("backendRefs") or []]
    return any(str(ref.get("name", "")).startswith(f"{isvc}-") for ref in refs)


def start_canary(
    model: str,
    version: str,
    percent: int | None = None,
    *,
    namespace: str = NAMESPACE,
    api: Any = None,
    ready_timeout_s: float = 600,
) -> str:
    """For a pipeline's deploy step: put ``version`` on a canary of the live InferenceService,
    touching nothing else (the caller has set the ``challenger`` alias), in the same safe order
    as ``rollout start`` (Standard: ready at 0% before the share). Returns what it did."""
    cluster = Cluster(namespace, api)
    out: list[str] = []
    for step in plan_start(model, Serving.from_isvc(cluster.get(model)), version, percent).steps:
        isvc = cluster.get(model)
        if step.target != Serving.from_isvc(isvc):
            out.append(cluster.apply(model, isvc, step.target))
        out += cluster.wait(model, step, ready_timeout_s)
    return "\n".join(out)


def pin_version(model: str, version: str, *, namespace: str = NAMESPACE, api: Any = None) -> str:
    """For a pipeline's deploy step: the live InferenceService serves exactly ``version``."""
    cluster = Cluster(namespace, api)
    isvc = cluster.get(model)
    return cluster.apply(model, isvc, plan_pin(model, Serving.from_isvc(isvc), version).steps[0].target)
