"""Lint rules for what the schemas allow but the platform must not do: unpinned images, no
resource requests or probes, root containers, canary fields the deployment mode ignores, moving
model aliases, a payload logger naming no Service, several platform images in one bundle."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlparse

from pipelines.manifests.findings import Finding, Resource, ident

PLATFORM_IMAGE = "ghcr.io/constructos/ml-platform"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
CANARY_MODES = {"Knative", "Serverless"}  # Serverless: the pre-0.16 name of Knative mode
NO_CANARY_MODES = {"Standard", "RawDeployment", "ModelMesh"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def containers(res: Resource) -> list[Resource]:
    """The containers a resource runs (InferenceService predictor or a workload's pod)."""
    spec = res.get("spec") or {}
    if res.get("kind") == "InferenceService":
        return list((spec.get("predictor") or {}).get("containers") or [])
    if res.get("kind") in WORKLOAD_KINDS:
        return list(((spec.get("template") or {}).get("spec") or {}).get("containers") or [])
    return []


def pod_security(res: Resource) -> Resource:
    if res.get("kind") in WORKLOAD_KINDS:
        return ((res["spec"].get("template") or {}).get("spec") or {}).get("securityContext") or {}
    return {}  # InferenceService: Knative takes container-level security only


def image_tag(image: str) -> str | None:
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def lint_container(res: Resource, c: Resource) -> Iterator[Finding]:
    name = f"{ident(res)} container {c.get('name', '?')}"
    tag = image_tag(str(c.get("image", "")))
    if tag is None or tag == "latest":
        yield Finding(name, "image-tag", f"image {c.get('image')!r} must carry a pinned tag, not latest or none")
    if not (c.get("resources") or {}).get("requests"):
        yield Finding(name, "resources", "no resource requests")
    serves = res.get("kind") == "InferenceService" or bool(c.get("ports"))
    for probe in ("readinessProbe", "livenessProbe"):
        if serves and not c.get(probe):
            yield Finding(name, "probes", f"serves traffic but has no {probe}")
    sc, pod = c.get("securityContext") or {}, pod_security(res)
    if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        yield Finding(name, "non-root", "runAsNonRoot: true is not set (container or pod)")
    if sc.get("allowPrivilegeEscalation") is not False:
        yield Finding(name, "non-root", "allowPrivilegeEscalation: false is not set")


def lint_isvc(res: Resource, services: set[tuple[str, str]]) -> Iterator[Finding]:
    name = ident(res)
    annotations = (res.get("metadata") or {}).get("annotations") or {}
    spec = res.get("spec") or {}
    predictor = spec.get("predictor") or {}
    mode = annotations.get(DEPLOYMENT_MODE)
    canary = predictor.get("canaryTrafficPercent")

    if mode is None:
        yield Finding(name, "deployment-mode", f"set the {DEPLOYMENT_MODE} annotation explicitly")
    elif mode not in CANARY_MODES | NO_CANARY_MODES:
        yield Finding(name, "deployment-mode", f"unknown deployment mode {mode!r}")
    if canary is not None:
        if not isinstance(canary, int) or not 0 <= canary <= 100:
            yield Finding(name, "canary-range", f"canaryTrafficPercent {canary!r} is outside 0-100")
        if mode not in CANARY_MODES:
            yield Finding(
                name, "canary-ignored", f"canaryTrafficPercent is silently ignored in {mode or 'the default'} mode"
            )
    for entry in spec.get("canary") or []:
        percent = entry.get("trafficPercent")
        if not isinstance(percent, int) or not 0 <= percent <= 100:
            yield Finding(name, "canary-range", f"spec.canary trafficPercent {percent!r} is outside 0-100")
        if mode in CANARY_MODES:
            yield Finding(name, "canary-ignored", f"spec.canary is a Standard-mode field, ignored in {mode} mode")

    cs = predictor.get("containers") or []
    if cs and not any(
        str(arg).startswith("--model_name=") for arg in [*cs[0].get("command", []), *cs[0].get("args", [])]
    ):
        yield Finding(name, "model-name", "custom container without --model_name (KServe's default name is 'model')")

    uris = [str(a).split("=", 1)[1] for c in cs[:1] for a in c.get("args", []) if str(a).startswith("--model_uri=")]
    for uri in uris:
        if not re.fullmatch(r"models:/[^/@]+/\d+", uri):
            yield Finding(name, "pinned-version", f"serves {uri}: pin models:/<model>/<version> (an alias moves)")

    url = (predictor.get("logger") or {}).get("url")
    if url:
        host = urlparse(url).hostname or ""
        svc, _, rest = host.partition(".")
        namespace = rest.split(".", 1)[0] if rest else (res.get("metadata") or {}).get("namespace", "")
        if (namespace, svc) not in services:
            yield Finding(name, "logger-url", f"payload logger {url} names no Service in the bundle")


def lint_image_consistency(resources: list[Resource]) -> Iterator[Finding]:
    """One platform image: every workload and the settings the pipelines read agree on it."""
    images = {
        str(c.get("image"))
        for res in resources
        for c in containers(res)
        if str(c.get("image", "")).startswith(PLATFORM_IMAGE + ":")
    }
    if len(images) > 1:
        yield Finding("bundle", "image-consistency", f"several platform images: {sorted(images)}")
    for res in resources:
        configured = (res.get("data") or {}).get("CONSTRUCTOS_IMAGE") if res.get("kind") == "ConfigMap" else None
        if configured is not None and images and configured not in images:
            yield Finding(ident(res), "image-consistency", f"CONSTRUCTOS_IMAGE {configured!r} is not {sorted(images)}")


def lint(resources: list[Resource]) -> list[Finding]:
    services = {
        ((r.get("metadata") or {}).get("namespace", ""), (r.get("metadata") or {}).get("name", ""))
        for r in resources
        if r.get("kind") == "Service"
    }
    findings: list[Finding] = []
    for res in resources:
        if res.get("kind") == "InferenceService":
            findings += lint_isvc(res, services)
        for c in containers(res):
            findings += lint_container(res, c)
    findings += lint_image_consistency(resources)
    return findings
