"""KServe's own install for the node, from the config/ folder of its Go module (the release's CRDs,
RBAC, webhooks and ``inferenceservice-config``), printed as one YAML stream for
``kubectl apply --server-side``.

KServe's kustomize default needs cert-manager and runs the manager as a pod of an image we cannot
pull; here the manager runs beside the control plane instead, so this prints:

* every CRD of ``config/crd/full`` (as the release installs them),
* the manager's ClusterRole bound to the user of its client certificate,
* the webhook configurations with our CA as their ``caBundle``, and the webhook Service with an
  Endpoints object pointing at the host address the manager listens on,
* ``inferenceservice-config`` with four changes: Standard (RawDeployment) as the default mode,
  the agent image pinned to the release's tag (built here from the same module) with requests
  for a small node, and Ingress creation off (the node has no Ingress controller; ``--gateway``
  turns KServe's Gateway API routes on instead).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "kserve"
WEBHOOK_SERVICE = "kserve-webhook-server-service"
USER = "kserve-controller-manager"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crds(config: Path) -> list[dict[str, Any]]:
    found = sorted((config / "crd" / "full").glob("serving.kserve.io_*.yaml"))
    found += sorted((config / "crd" / "full" / "clusterstoragecontainer").glob("*.yaml"))
    return [doc for path in found for doc in load_all(path) if doc.get("kind") == "CustomResourceDefinition"]


def rbac(config: Path) -> list[dict[str, Any]]:
    (role,) = [d for d in load_all(config / "rbac" / "role.yaml") if d["kind"] == "ClusterRole"]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kserve-manager-rolebinding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }
    return [role, binding]


def webhooks(config: Path, ca: bytes, host: str, port: int) -> list[dict[str, Any]]:
    docs = load_all(config / "webhook" / "manifests.yaml")
    for doc in docs:
        doc["metadata"].pop("creationTimestamp", None)
        for hook in doc.get("webhooks", []):
            service = hook["clientConfig"]["service"]
            service.update(name=WEBHOOK_SERVICE, namespace=NAMESPACE, port=443)
            hook["clientConfig"]["caBundle"] = base64.b64encode(ca).decode()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "webhook", "port": 443, "targetPort": port}]},
    }
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE},
        "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "webhook", "port": port}]}],
    }
    return [*docs, service, endpoints]


def settings(config: Path, agent_image: str, gateway: str | None) -> dict[str, Any]:
    (doc,) = load_all(config / "configmap" / "inferenceservice.yaml")
    data = doc["data"]
    data.pop("_example", None)
    deploy = json.loads(data["deploy"])
    deploy["defaultDeploymentMode"] = "Standard"
    data["deploy"] = json.dumps(deploy, indent=2)
    for key in ("logger", "batcher", "agent"):
        entry = json.loads(data[key])
        # a sidecar beside every predictor replica: requests sized for one small node
        entry.update(image=agent_image, cpuRequest="10m", memoryRequest="64Mi")
        data[key] = json.dumps(entry, indent=2)
    ingress = json.loads(data["ingress"])
    if gateway:  # Gateway API: KServe writes an HTTPRoute per InferenceService to this Gateway
        ingress.update(enableGatewayApi=True, kserveIngressGateway=gateway, disableIngressCreation=False)
    else:
        ingress["disableIngressCreation"] = True
    data["ingress"] = json.dumps(ingress, indent=2)
    doc["metadata"] = {"name": "inferenceservice-config", "namespace": NAMESPACE}
    return doc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="config/ of KServe's module")
    parser.add_argument("--ca", type=Path, required=True, help="the CA that signed the webhook certificate")
    parser.add_argument("--host", required=True, help="the address KServe's manager listens on")
    parser.add_argument("--webhook-port", type=int, default=9443)
    parser.add_argument("--agent-image", required=True)
    parser.add_argument("--gateway", help="namespace/name of a Gateway API Gateway (off: no routes)")
    args = parser.parse_args(argv)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    docs = [namespace, *crds(args.config), *rbac(args.config)]
    docs += webhooks(args.config, args.ca.read_bytes(), args.host, args.webhook_port)
    docs.append(settings(args.config, args.agent_image, args.gateway))
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
