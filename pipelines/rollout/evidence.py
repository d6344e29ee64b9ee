"""Where canary evidence comes from: Prometheus (HTTP query API) or the inference log on Kafka.

**Prometheus** (``--prometheus URL``): rows from ``constructos_rows_scored_total``, error rate from
``constructos_requests_total`` (canary pods only: a shadow answers no requests), p99 from KServe's
``request_predict_seconds`` joined on ``pod`` with ``constructos_model_info`` (the histogram has no
version label; each canary pod serves one version) or, for a shadow, ``constructos_shadow_seconds``;
the score shift from the ``constructos_prediction_score``/``_value`` buckets; live accuracy from the
monitoring service's ``constructos_live_metric``. It queries with httpx (a runtime dependency).

**Inference log** (default): the model's records of the last ``since_s`` seconds from
``mlops.inference-log`` and its outcome events, read from Kafka up to the current end offsets.
Latency and errors are not in the log and are reported as not measured.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from feature_specs.spec import FeatureSpec
from pipelines.monitoring.drift import psi
from pipelines.rollout.canary import Evidence, Side, evidence_from_log
from pipelines.settings import Settings
from pipelines.streaming.topics import INFERENCE_LOG, named

Sample = tuple[dict[str, str], float]
Query = Callable[[str], list[Sample]]


def prometheus(url: str, timeout_s: float = 10.0) -> Query:
    """An instant-query function against a Prometheus HTTP API (``/api/v1/query``)."""
    import httpx

    def query(promql: str) -> list[Sample]:
        answer = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=timeout_s)
        answer.raise_for_status()
        body = answer.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus: {body.get('error', body)}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    return query


def promql(spec: FeatureSpec, version: str, window: str) -> dict[str, str]:
    """The queries for one version of a model over ``window`` (e.g. ``10m``)."""
    m, v = spec.name, version
    scores = "constructos_prediction_score" if spec.is_classifier else "constructos_prediction_value"
    pods = f'max by (pod) (constructos_model_info{{model="{m}",version="{v}",role="champion"}})'
    return {
        "rows": f'sum(increase(constructos_rows_scored_total{{model="{m}",version="{v}"}}[{window}]))',
        "requests": f'sum(increase(constructos_requests_total{{model="{m}",version="{v}"}}[{window}]))',
        "errors": f'sum(increase(constructos_requests_total{{model="{m}",version="{v}",outcome="error"}}[{window}]))',
        "p99": f"histogram_quantile(0.99, sum by (le) (rate(request_predict_seconds_bucket"
        f'{{model_name="{m}"}}[{window}]) * on(pod) group_left() {pods}))',
        "shadow_p99": f"histogram_quantile(0.99, sum by (le) (rate(constructos_shadow_seconds_bucket"
        f'{{model="{m}",version="{v}"}}[{window}])))',
        "live": f'max(constructos_live_metric{{model="{m}",version="{v}",metric="{spec.gate.primary_metric}"}})',
        "labels": f'max(constructos_live_labels{{model="{m}",version="{v}"}})',
        "buckets": f'sum by (le) (increase({scores}_bucket{{model="{m}",version="{v}"}}[{window}]))',
    }


def _scalar(samples: list[Sample]) -> float | None:
    value = samples[0][1] if samples else math.nan
    return None if math.isnan(value) else value


def bucket_shares(samples: list[Sample]) -> list[float]:
    """Per-bin shares from cumulative histogram buckets (``le`` labels)."""
    cumulative = sorted((float(labels["le"]), value) for labels, value in samples)
    counts = np.diff([0.0, *(c for _, c in cumulative)])
    total = counts.sum()
    return [float(c) for c in counts / total] if total > 0 else []


def evidence_from_prometheus(spec: FeatureSpec, query: Query, champion: str, challenger: str, window: str) -> Evidence:
    def side(version: str) -> tuple[Side, list[float]]:
        q = {name: query(text) for name, text in promql(spec, version, window).items()}
        requests, errors = _scalar(q["requests"]), _scalar(q["errors"])
        error_rate = (errors or 0.0) / requests if requests else None
        p99 = _scalar(q["p99"])
        p99 = p99 if p99 is not None else _scalar(q["shadow_p99"])
        found = Side(
            version, int(_scalar(q["rows"]) or 0), error_rate, p99, _scalar(q["live"]), int(_scalar(q["labels"]) or 0)
        )
        return found, bucket_shares(q["buckets"])

    (ours, our_bins), (theirs, their_bins) = side(champion), side(challenger)
    shift = psi(our_bins, their_bins) if our_bins and len(our_bins) == len(their_bins) else None
    return Evidence(ours, theirs, shift)


def read_topic(settings: Settings, topic: str, since_s: float, timeout_s: float = 30.0) -> list[bytes]:
    """The values of ``topic`` written in the last ``since_s`` seconds, up to the end offsets of now."""
    consumer = KafkaConsumer(**settings.kafka_options(), enable_auto_commit=False, bootstrap_timeout_ms=10_000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        since_ms = int((time.time() - since_s) * 1000)
        for tp, found in consumer.offsets_for_times({tp: since_ms for tp in partitions}).items():
            consumer.seek(tp, found.offset if found else end[tp])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        consumer.close()


def _json(values: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            out.append(parsed)
    return out


def evidence_from_kafka(
    spec: FeatureSpec, settings: Settings, champion: str | None, challenger: str | None, since_s: float
) -> Evidence:
    records = _json(read_topic(settings, named(INFERENCE_LOG, settings), since_s))
    outcomes = _json(read_topic(settings, named(spec.outcome_topic, settings), since_s))
    return evidence_from_log(spec, records, outcomes, champion, challenger)
