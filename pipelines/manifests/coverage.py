"""Every model has its manifests: a built overlay must hold, for each discovered spec, the model's
InferenceService (serving that model) and the KafkaTopics of its events, dead letters and outcomes.
An overlay with no KafkaTopic at all uses a broker outside the cluster (the node overlay): its
topics are made by ``python -m pipelines.streaming.topics`` (``make kafka-up``), not checked here."""

from __future__ import annotations

from typing import Any

from feature_specs import FeatureSpec
from pipelines.manifests.findings import Finding
from pipelines.manifests.render import k8s_name


def coverage(resources: list[dict[str, Any]], specs: dict[str, FeatureSpec]) -> list[Finding]:
    isvcs = {(r.get("metadata") or {}).get("name"): r for r in resources if r.get("kind") == "InferenceService"}
    topics = {(r.get("spec") or {}).get("topicName") for r in resources if r.get("kind") == "KafkaTopic"}
    findings = []
    for model, spec in sorted(specs.items()):
        isvc = isvcs.get(k8s_name(model))
        if isvc is None:
            findings.append(Finding(f"model {model}", "coverage", f"no InferenceService {k8s_name(model)}"))
        else:
            command = [
                str(a) for c in isvc["spec"]["predictor"].get("containers", [])[:1] for a in c.get("command", [])
            ]
            if f"--model_name={model}" not in command:
                findings.append(
                    Finding(f"model {model}", "coverage", f"InferenceService {k8s_name(model)} serves another model")
                )
        for topic in (spec.source_topic, f"{spec.source_topic}.dlq", spec.outcome_topic):
            if topics and topic not in topics:
                findings.append(Finding(f"model {model}", "coverage", f"no KafkaTopic with topicName {topic}"))
    return findings
