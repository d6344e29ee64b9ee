"""The group-join safety net against the real broker: a member left with no partitions although
there are enough for every member is told apart from a member that is one too many, and a consumer
that never joins (seen on a busy machine: kafka-python looking for the coordinator for good) is
told to join again."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.coordinator.assignors.abstract import ConsumerProtocolAssignment
from kafka.coordinator.assignors.range import RangePartitionAssignor

from pipelines.settings import Settings
from pipelines.streaming.trigger.assignment import AssignmentWatch, NoPartitions, NotJoined

pytestmark = pytest.mark.integration


class NoMetadataRange(RangePartitionAssignor):
    """The range assignor as it behaves when it has no metadata for the topics: nothing for anyone."""

    @classmethod
    def assign(cls, cluster: Any, members: Any) -> dict[str, Any]:
        return {m.member_id: ConsumerProtocolAssignment(cls.version, [], b"") for m in members}


def topic(settings: Settings, partitions: int) -> str:
    name = f"{settings.kafka_topic_prefix}watch"
    admin = KafkaAdminClient(**settings.kafka_options())
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    return name


def consumer(settings: Settings, name: str, **options: Any) -> KafkaConsumer:
    return KafkaConsumer(name, **settings.kafka_options(), group_id=settings.trigger_group, **options)


def watch_for(seconds: float, watch: AssignmentWatch, *consumers: KafkaConsumer) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(timeout_ms=200)
        watch.check(consumers[-1])


def test_a_member_given_nothing_while_partitions_are_enough_is_stuck(kafka_settings: Settings) -> None:
    name = topic(kafka_settings, 3)
    stuck = consumer(kafka_settings, name, partition_assignment_strategy=[NoMetadataRange])
    watch = AssignmentWatch(kafka_settings.kafka_options(), kafka_settings.trigger_group, stuck_after_s=2)
    try:
        with pytest.raises(NoPartitions, match="no partitions after 2s for 1 member"):
            watch_for(30, watch, stuck)
    finally:
        stuck.close()


def test_a_member_that_is_one_too_many_is_left_alone(kafka_settings: Settings) -> None:
    name = topic(kafka_settings, 1)
    first = consumer(kafka_settings, name)
    first.poll(timeout_ms=3000)
    spare = consumer(kafka_settings, name)
    watch = AssignmentWatch(kafka_settings.kafka_options(), kafka_settings.trigger_group, stuck_after_s=1)
    try:
        watch_for(8, watch, first, spare)  # two members, one partition: the spare has none, rightly
        assert len(first.assignment()) + len(spare.assignment()) == 1
    finally:
        spare.close()
        first.close()


def test_a_consumer_that_never_finds_its_coordinator_joins_again(kafka_settings: Settings) -> None:
    name = topic(kafka_settings, 3)
    lost = consumer(kafka_settings, name)
    watch = AssignmentWatch(kafka_settings.kafka_options(), kafka_settings.trigger_group, stuck_after_s=2)
    # the state a hung trigger's stacks showed: every poll's coordinator lookup times out
    with mock.patch.object(lost._coordinator, "ensure_coordinator_ready", return_value=False):
        try:
            with pytest.raises(NotJoined, match=f"not a member of group {kafka_settings.trigger_group} after 2s"):
                watch_for(30, watch, lost)
        finally:
            lost.close()
