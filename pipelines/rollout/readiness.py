"""Is it ready? Pure: the objects the controller made in, the reason it is not ready yet out."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.rollout.state import Resource, RolloutError, Serving, model_uri_of, predictor_service


def revision_ready(isvc: Resource) -> bool:
    """Knative: the controller has seen the current spec and its newest predictor revision is ready."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    seen = int(status.get("observedGeneration") or 0) >= int(isvc.get("metadata", {}).get("generation") or 0)
    created = predictor.get("latestCreatedRevision")
    return seen and bool(created) and predictor.get("latestReadyRevision") == created


def deployment_problem(deployment: Resource | None, name: str, uri: str) -> str | None:
    """Why the Deployment ``name`` does not yet serve ``uri`` with every replica ready and no old
    pod left (``kubectl rollout status``); None when it does. KServe's status cannot tell: in
    Standard mode it reports a predictor ready while a rolling update still runs old pods."""
    if deployment is None:
        return f"Deployment {name} does not exist yet"
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    try:
        running = model_uri_of(containers[0]) if containers else "no container"
    except RolloutError:
        running = "no model URI"
    if running != uri:
        return f"Deployment {name} runs {running}, not yet {uri}"
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(deployment.get("metadata", {}).get("generation") or 0):
        return f"Deployment {name}: its controller has not seen the latest spec"
    counts = {k: int(status.get(k) or 0) for k in ("replicas", "updatedReplicas", "availableReplicas")}
    if counts["updatedReplicas"] >= wanted and counts["replicas"] <= wanted and counts["availableReplicas"] >= wanted:
        return None if wanted > 0 else f"Deployment {name} has 0 replicas"
    why = [
        f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
        for c in status.get("conditions") or []
        if (c.get("type") in ("Available", "Progressing") and c.get("status") != "True")
        or (c.get("type") == "ReplicaFailure" and c.get("status") == "True")
        or c.get("reason") == "ProgressDeadlineExceeded"
    ]
    return (
        f"Deployment {name}: {counts['availableReplicas']}/{wanted} replicas available, "
        f"{counts['updatedReplicas']} updated, {counts['replicas']} in all" + (f" ({'; '.join(why)})" if why else "")
    )


def canary_status_problem(isvc: Resource, name: str) -> str | None:
    """What KServe reports for the canary ``name`` (``status.canaryStatuses``: its HTTPRoute weights
    only ready canaries, since kserve#5984); None when it reports it ready."""
    for entry in (isvc.get("status") or {}).get("canaryStatuses") or []:
        if entry.get("name") == name:
            return None if entry.get("ready") else f"KServe reports canary {name} not ready"
    return f"KServe has not reported canary {name} yet"


def standard_problem(
    isvc: Resource, deployments: dict[str, Resource | None], target: Serving, *, stable: bool, canary: bool
) -> str | None:
    """Standard mode: why ``target`` is not yet served (the stable side, the canary side, or both)."""
    name = isvc["metadata"]["name"]
    problems = []
    if stable:
        dep = predictor_service(name, isvc["spec"]["predictor"].get("name"))
        problems.append(deployment_problem(deployments.get(dep), dep, target.model_uri))
    if canary and target.canary_uri and target.canary_name:
        dep = predictor_service(name, target.canary_name)
        problems.append(deployment_problem(deployments.get(dep), dep, target.canary_uri))
        problems.append(canary_status_problem(isvc, target.canary_name))
    found = [p for p in problems if p]
    return "; ".join(found) if found else None


def pod_problems(pods: Sequence[Resource]) -> list[str]:
    """Why a predictor's pods are not ready, as the kubelet says (waiting reasons, failed probes)."""
    out = []
    for pod in pods:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            if c.get("ready"):
                continue
            state = c.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, (c.get("lastState") or {}).get("terminated") or {}
            probe = "running, readiness probe failing" if "running" in state else "not ready"
            detail = waiting.get("reason") or probe
            if terminated.get("reason"):
                detail += f" (last exit: {terminated['reason']})"
            out.append(f"pod {pod['metadata']['name']} container {c.get('name')}: {detail}")
    return out


def route_problem(routes: Sequence[Resource], service: str) -> str | None:
    """Why the gateway may still send traffic to ``service``: an HTTPRoute gives it weight, or the
    gateway has not yet accepted the route's latest generation. None: drained."""
    for route in routes:
        name = route["metadata"]["name"]
        for rule in route.get("spec", {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("name") == service and int(ref.get("weight", 1)) > 0:
                    return f"HTTPRoute {name} still sends weight {ref.get('weight', 1)} to {service}"
        generation = int(route["metadata"].get("generation") or 0)
        for parent in (route.get("status") or {}).get("parents") or []:
            accepted = [c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"]
            seen = [int(c["observedGeneration"]) for c in accepted if c.get("observedGeneration") is not None]
            if seen and seen[0] < generation:  # a gateway that reports no generation cannot be waited for
                return f"the gateway has not yet accepted generation {generation} of HTTPRoute {name}"
    return None
