"""Schema checks of a rendered resource: the KServe CRD's own ``openAPIV3Schema`` for
InferenceServices (closed: an unknown field is an error, the API server would silently prune it),
kubernetes-validate's strict schemas for core kinds, and a sanity check of apiVersion, kind and
metadata for every resource (the only check of a custom resource without a schema here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from pipelines.manifests.findings import Finding, Resource, ident

ISVC_SCHEMA = Path(__file__).resolve().parents[2] / "manifests" / "schemas" / "inferenceservice-v1beta1.json"
KUBERNETES_VERSION = "1.33"
"""Kubernetes release whose schemas the core kinds are checked against."""
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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
