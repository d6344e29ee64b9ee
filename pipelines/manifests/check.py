"""Build every kustomize overlay and check what it renders before a cluster sees it.

* InferenceServices: the KServe CRD's own ``openAPIV3Schema`` (manifests/schemas), closed so
  that an unknown field is an error (the API server would silently prune it).
* Kinds Kubernetes ships (Deployment, Service, RBAC, NetworkPolicy, ...): the Kubernetes JSON
  schemas of ``kubernetes-validate``, strict.
* Other custom resources (Strimzi ``KafkaTopic``): no schema here, so apiVersion, kind and
  metadata are checked only — and the report says so.
* Lint rules for what the schemas allow but the platform must not do (see ``lint``).
* Every discovered spec has its InferenceService and KafkaTopics (``coverage``), and the
  committed manifests are what ``make manifests`` renders from the specs (``render --check``).

Usage: ``python -m pipelines.manifests.check [OVERLAY_DIR ...]`` (default: every overlay).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema

from pipelines.kustomize import build, find_kustomize

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
ISVC_SCHEMA = MANIFESTS / "schemas" / "inferenceservice-v1beta1.json"
KUBERNETES_VERSION = "1.33"
"""Kubernetes release whose schemas the core kinds are checked against."""

PLATFORM_IMAGE = "ghcr.io/constructos/ml-platform"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
CANARY_MODES = {"Knative", "Serverless"}  # Serverless: the pre-0.16 name of Knative mode
NO_CANARY_MODES = {"Standard", "RawDeployment", "ModelMesh"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Resource = dict[str, Any]
__all__ = ["MANIFESTS", "Finding", "Resource", "build", "find_kustomize", "main"]


@dataclass(frozen=True)
class Finding:
    resource: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource}: [{self.rule}] {self.message}"


def ident(res: Resource) -> str:
    meta = res.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{res.get('kind', '?')}/{where}{meta.get('name', '?')}"


# --- schemas --------------------------------------------------------------------------------


def close_schema(node: Any) -> Any:
    """additionalProperties: false wherever an object lists properties and keeps no unknowns."""
    if isinstance(node, dict):
        node = {k: close_schema(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [close_schema(v) for v in node]
    return node


@cache
def isvc_validator() -> jsonschema.Draft4Validator:
    schema = close_schema(json.loads(ISVC_SCHEMA.read_text()))
    return jsonschema.Draft4Validator(schema)


@cache
def core_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator | None:
    """kubernetes-validate's strict schema for a core kind (None if it has none), loaded once:
    its own ``validate`` re-reads 1.4 MB of definitions for every resource."""
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    definitions = schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry: Registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_findings(res: Resource) -> tuple[list[Finding], str | None]:
    """Schema errors, plus a note when the kind has no schema here."""
    name = ident(res)
    if res.get("kind") == "InferenceService" and res.get("apiVersion") == "serving.kserve.io/v1beta1":
        errors = sorted(isvc_validator().iter_errors(res), key=lambda e: list(e.absolute_path))
        return [Finding(name, "schema", f"{_path(e)}: {e.message}") for e in errors], None
    validator = core_validator(str(res.get("kind")), str(res.get("apiVersion")))
    if validator is None:
        return [], f"{res.get('apiVersion')} {res.get('kind')}: no schema here, apiVersion/kind/metadata checked only"
    errors = sorted(validator.iter_errors(res), key=lambda e: list(e.absolute_path))
    return [Finding(name, "schema", f"{_path(e)}: {e.message}") for e in errors], None


def _path(error: jsonschema.ValidationError) -> str:
    return "." + ".".join(str(p) for p in error.absolute_path) if error.absolute_path else "."


def sanity(res: Resource) -> Iterator[Finding]:
    name = ident(res)
    if not isinstance(res.get("apiVersion"), str) or not res["apiVersion"]:
        yield Finding(name, "sanity", "apiVersion missing")
    if not isinstance(res.get("kind"), str) or not res["kind"]:
        yield Finding(name, "sanity", "kind missing")
    meta = res.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        yield Finding(name, "sanity", "metadata.name missing")
        return
    if len(meta["name"]) > 253 or not DNS_SUBDOMAIN.match(meta["name"]):
        yield Finding(name, "sanity", f"metadata.name {meta['name']!r} is not a DNS subdomain name")
    if res.get("kind") not in {"Namespace", "ClusterRole", "ClusterRoleBinding"} and not meta.get("namespace"):
        yield Finding(name, "sanity", "metadata.namespace missing (kustomize sets it per base)")


# --- lint -----------------------------------------------------------------------------------


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


def check(resources: list[Resource]) -> tuple[list[Finding], list[str]]:
    """All findings for one rendered bundle, and notes on what could only be sanity-checked."""
    findings: list[Finding] = []
    notes: set[str] = set()
    for res in resources:
        findings += sanity(res)
        errors, note = schema_findings(copy.deepcopy(res))
        findings += errors
        if note:
            notes.add(note)
    findings += lint(resources)
    return findings, sorted(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.manifests.check", description=__doc__.split("\n")[0])
    parser.add_argument("overlays", nargs="*", type=Path, help="overlay directories (default: all)")
    args = parser.parse_args(argv)
    overlays = args.overlays or sorted(p for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
    kustomize = find_kustomize()
    if not kustomize:
        print("kustomize not found: `make kustomize` installs the pinned one (or set KUSTOMIZE)", file=sys.stderr)
        return 2
    from feature_specs import load_specs
    from pipelines.manifests import render
    from pipelines.manifests.coverage import coverage

    specs = load_specs()
    manifests = args.overlays[0].resolve().parents[1] if args.overlays else MANIFESTS
    stale = render.stale(manifests, specs)
    print(f"{'FAIL' if stale else 'ok':4} rendered from the specs: {len(stale)} stale files")
    for problem in stale:
        print(f"     {problem}: run `make manifests`")
    failed = bool(stale)
    for overlay in overlays:
        try:
            resources = build(overlay, kustomize)
        except RuntimeError as e:
            print(f"FAIL {overlay}: {e}", file=sys.stderr)
            failed = True
            continue
        findings, notes = check(resources)
        findings += coverage(resources, specs)
        status = "FAIL" if findings else "ok"
        print(f"{status:4} {overlay.name}: {len(resources)} resources, {len(findings)} findings")
        for finding in findings:
            print(f"     {finding}")
        for note in notes:
            print(f"     note: {note}")
        failed |= bool(findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
