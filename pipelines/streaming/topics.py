"""The project's Kafka topics, and their idempotent creation.

Per model (from its feature spec): ``source_topic`` (events the trigger lands), ``outcome_topic``
(ground truth for live accuracy) and ``<source_topic>.dlq`` (rejected events, kept 7 days).
Shared: ``mlops.retrain-requests``, ``mlops.model-events`` and ``mlops.inference-log``.
Every name carries ``Settings.kafka_topic_prefix``. ``python -m pipelines.streaming.topics`` creates them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from feature_specs import load_spec, load_specs
from pipelines.settings import Settings, get_settings

log = logging.getLogger(__name__)

RETRAIN_REQUESTS = "mlops.retrain-requests"
MODEL_EVENTS = "mlops.model-events"
INFERENCE_LOG = "mlops.inference-log"
DLQ_RETENTION_MS = 7 * 24 * 3600 * 1000


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def named(topic: str, settings: Settings | None = None) -> str:
    """A topic's name on the cluster: the configured prefix + ``topic``."""
    return (settings or get_settings()).kafka_topic_prefix + topic


def all_topics(models: Iterable[str] | None = None) -> list[str]:
    """Every topic the platform uses, without prefix (default: of every discovered spec)."""
    topics = [RETRAIN_REQUESTS, MODEL_EVENTS, INFERENCE_LOG]
    for model in load_specs() if models is None else models:
        spec = load_spec(model)
        topics += [spec.source_topic, dlq(spec.source_topic), spec.outcome_topic]
    return topics


def ensure_topics(
    settings: Settings | None = None, models: Iterable[str] | None = None, timeout_ms: int = 30_000
) -> list[str]:
    """Create the missing topics; returns the names that were created. Safe to call any time.

    Raises ``KafkaTimeoutError`` when no broker answers within ``timeout_ms``."""
    settings = settings or get_settings()
    admin = KafkaAdminClient(
        **settings.kafka_options(), client_id="constructos-topics", bootstrap_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                named(t, settings),
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                topic_configs={"retention.ms": str(DLQ_RETENTION_MS)} if t.endswith(".dlq") else {},
            )
            for t in all_topics(models)
            if named(t, settings) not in existing
        ]
        created = []
        for topic in wanted:  # one by one: a replica creating the same topic concurrently is fine
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    created = ensure_topics(settings)
    print(f"topics at {settings.kafka_bootstrap}: {len(all_topics())} present, {len(created)} created")


if __name__ == "__main__":
    main()
