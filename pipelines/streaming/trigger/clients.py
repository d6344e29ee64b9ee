"""The trigger's Kafka clients for one session: the group's consumer (and its rebalance listener) and the
dead letters' producer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from pipelines.settings import Settings


def dead_letter_producer(options: dict[str, Any]) -> KafkaProducer:
    return KafkaProducer(  # dead letters only: at least once; not idempotent, so a refused
        **options,  # record fails its own batch, not the producer
        linger_ms=5,
        compression_type="gzip",
        enable_idempotence=False,
        metrics_enabled=False,
        bootstrap_timeout_ms=5000,
    )


def group_consumer(options: dict[str, Any], settings: Settings) -> KafkaConsumer:
    """The trigger group's consumer: commits by hand, from the earliest offset when the group has none."""
    return KafkaConsumer(
        **options,
        group_id=settings.trigger_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.trigger_max_poll_records,
        session_timeout_ms=10_000,  # a killed replica's partitions move on after 10 s, not 45
        max_partition_fetch_bytes=8 << 20,
        metrics_enabled=False,
        check_crcs=True,  # in C with the crc32c package
        bootstrap_timeout_ms=5000,
    )


class OnAssignment(ConsumerRebalanceListener):
    """Calls ``assigned()`` on every assignment (the trigger finishes interrupted landings and
    resumes interrupted launches)."""

    def __init__(self, assigned: Callable[[], None]) -> None:
        self.assigned = assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned()
