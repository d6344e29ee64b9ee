"""A Prometheus scrape configuration from the overlay's own ServiceMonitors and PodMonitors, for
workloads running locally: what the Prometheus Operator would scrape in the cluster, pointed at
local addresses.

The pods are those the manifests would make: a Deployment's template, and for an InferenceService
the predictor pod KServe labels ``serving.kserve.io/inferenceservice=<name>``, ``component=predictor``.
Each monitor's selector is matched against them (and a ServiceMonitor's through the Services it
selects), its endpoint's port must exist on the pod, and every selected workload that is given a
local address becomes a target with the labels the operator's relabelling sets (``namespace``,
``pod``, ``container``, ``endpoint``, ``service``, ``job``) and the ``__meta_kubernetes_*`` labels a
monitor's own ``relabelings`` read (pod labels, names). A monitor that selects nothing is an error.

    python -m pipelines.manifests.scrape --target credit-risk=127.0.0.1:8080 --target monitoring=127.0.0.1:8000 \\
        [--overlay manifests/overlays/dev] [--interval 5s] > prometheus.yml

Workloads given the same address (one local ``python -m predictors`` serving every model) are one
target, named after the first of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.kustomize import build
from pipelines.manifests.check import MANIFESTS
from pipelines.manifests.findings import Resource

MONITOR_KINDS = ("ServiceMonitor", "PodMonitor")
RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label"}


@dataclass
class Pod:
    workload: str
    namespace: str
    labels: dict[str, str]
    containers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:  # the local stand-in for a generated pod name
        return f"{self.workload}-local"

    def container_for(self, port: int | str) -> tuple[str, str] | None:
        """(container, port name) of a container port given by number or name."""
        for container in self.containers:
            for p in container.get("ports") or []:
                if port in (p.get("containerPort"), p.get("name")):
                    return container["name"], str(p.get("name") or p["containerPort"])
        return None


def pods(resources: list[Resource]) -> list[Pod]:
    found = []
    for res in resources:
        meta = res.get("metadata") or {}
        namespace = meta.get("namespace", "default")
        if res.get("kind") in {"Deployment", "StatefulSet", "DaemonSet"}:
            template = res["spec"]["template"]
            labels = (template.get("metadata") or {}).get("labels") or {}
            found.append(Pod(meta["name"], namespace, dict(labels), template["spec"]["containers"]))
        elif res.get("kind") == "InferenceService":
            labels = dict(meta.get("labels") or {})
            labels |= {"serving.kserve.io/inferenceservice": meta["name"], "component": "predictor"}
            found.append(Pod(meta["name"], namespace, labels, res["spec"]["predictor"].get("containers") or []))
    return found


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _namespaces(monitor: Resource) -> set[str] | None:
    """The namespaces a monitor looks in (None: any)."""
    chosen = monitor["spec"].get("namespaceSelector") or {}
    if chosen.get("any"):
        return None
    return set(chosen.get("matchNames") or [monitor["metadata"].get("namespace", "default")])


def _meta(pod: Pod, labels: dict[str, str]) -> dict[str, str]:
    """The Kubernetes discovery labels a monitor's ``relabelings`` read (dropped after relabelling)."""
    meta = {
        "__meta_kubernetes_namespace": pod.namespace,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_container_name": labels["container"],
    }
    meta |= {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in pod.labels.items()}
    if "service" in labels:
        meta["__meta_kubernetes_service_name"] = labels["service"]
    return meta


def _relabel(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{RELABEL_KEYS.get(k, k): v for k, v in rule.items()} for rule in rules or []]


def _selects(service: Resource, pod: Pod) -> bool:
    selector = service["spec"].get("selector")
    return bool(selector) and matches({"matchLabels": selector}, pod.labels)


def _endpoint_targets(
    monitor: Resource, endpoint: dict[str, Any], resources: list[Resource], all_pods: list[Pod]
) -> list[tuple[Pod, dict[str, str]]]:
    spaces = _namespaces(monitor)
    spec = monitor["spec"]
    in_space = [p for p in all_pods if spaces is None or p.namespace in spaces]
    out = []
    if monitor["kind"] == "PodMonitor":
        port = endpoint.get("port") or endpoint.get("portNumber") or endpoint.get("targetPort")
        for pod in (p for p in in_space if matches(spec.get("selector") or {}, p.labels)):
            if port is None or (hit := pod.container_for(port)) is None:
                continue
            container, port_name = hit
            job = f"{monitor['metadata'].get('namespace', 'default')}/{monitor['metadata']['name']}"
            out.append((pod, {"container": container, "endpoint": port_name, "job": job}))
        return out
    services = [
        s
        for s in resources
        if s.get("kind") == "Service"
        and (spaces is None or s["metadata"].get("namespace", "default") in spaces)
        and matches(spec.get("selector") or {}, s["metadata"].get("labels") or {})
    ]
    for service in services:
        namespace = service["metadata"].get("namespace", "default")
        backends = [p for p in in_space if p.namespace == namespace and _selects(service, p)]
        for sport in service["spec"].get("ports") or []:
            pod_port = sport.get("targetPort") or sport["port"]
            if endpoint.get("port", sport.get("name")) != sport.get("name"):
                continue
            if endpoint.get("targetPort", pod_port) != pod_port:
                continue
            name = service["metadata"]["name"]
            for pod in backends:
                if (hit := pod.container_for(pod_port)) is not None:
                    endpoint_name = str(sport.get("name") or sport["port"])
                    out.append((pod, {"container": hit[0], "endpoint": endpoint_name, "service": name, "job": name}))
    return out


def scrape_configs(
    resources: list[Resource], targets: dict[str, str], interval: str | None = None
) -> list[dict[str, Any]]:
    """One scrape job per monitor endpoint (named as the operator names them) with the local targets."""
    all_pods = pods(resources)
    jobs = []
    for monitor in (r for r in resources if r.get("kind") in MONITOR_KINDS):
        meta = monitor["metadata"]
        key = "podMetricsEndpoints" if monitor["kind"] == "PodMonitor" else "endpoints"
        prefix = "podMonitor" if monitor["kind"] == "PodMonitor" else "serviceMonitor"
        for index, endpoint in enumerate(monitor["spec"].get(key) or []):
            selected = _endpoint_targets(monitor, endpoint, resources, all_pods)
            if not selected:
                raise ValueError(f"{monitor['kind']}/{meta['name']} endpoint {index} selects no pod of the manifests")
            groups: dict[str, dict[str, str]] = {}
            for pod, labels in selected:
                address = targets.get(pod.workload)
                if address and address not in groups:
                    groups[address] = {"namespace": pod.namespace, "pod": pod.name, **labels, **_meta(pod, labels)}
            if not groups:
                continue
            job: dict[str, Any] = {
                "job_name": f"{prefix}/{meta.get('namespace', 'default')}/{meta['name']}/{index}",
                "metrics_path": endpoint.get("path", "/metrics"),
                "scheme": endpoint.get("scheme", "http"),
                "scrape_interval": interval or endpoint.get("interval", "30s"),
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "static_configs": [{"targets": [a], "labels": labels} for a, labels in groups.items()],
            }
            if endpoint.get("scrapeTimeout"):
                job["scrape_timeout"] = endpoint["scrapeTimeout"]
            if rules := _relabel(endpoint.get("relabelings")):
                job["relabel_configs"] = rules
            if rules := _relabel(endpoint.get("metricRelabelings")):
                job["metric_relabel_configs"] = rules
            jobs.append(job)
    return jobs


def prometheus_config(overlay: Path, targets: dict[str, str], interval: str | None = None) -> dict[str, Any]:
    resources = build(overlay)
    unknown = set(targets) - {p.workload for p in pods(resources)}
    if unknown:
        raise ValueError(f"no workload called {', '.join(sorted(unknown))} in {overlay}")
    scrape = scrape_configs(resources, targets, interval)
    return {"global": {"scrape_interval": interval or "15s"}, "scrape_configs": scrape}


def _target(text: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9-]+=[^=\s]+:\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WORKLOAD=HOST:PORT")
    name, address = text.split("=", 1)
    return name, address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.manifests.scrape", description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", type=Path, default=MANIFESTS / "overlays" / "dev")
    parser.add_argument("--target", type=_target, action="append", default=[], help="WORKLOAD=HOST:PORT (repeat)")
    parser.add_argument("--interval", help="scrape every workload this often (default: each monitor's interval)")
    args = parser.parse_args(argv)
    try:
        config = prometheus_config(args.overlay, dict(args.target), args.interval)
    except (ValueError, RuntimeError) as exc:
        parser.exit(2, f"scrape: {exc}\n")
    yaml.safe_dump(config, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
