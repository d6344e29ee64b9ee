"""A safety net for the group join: a consumer left with no partitions that should have some.

Two failures of kafka-python (3.0) seen here, both for good once they happen:

- it can join a group before it has its topics' metadata: the assignor then finds no partitions
  ("No partition metadata for topic ..."), this member gets none and may never rejoin;
- on a busy machine it can keep looking for the group's coordinator and never join at all
  (every ``poll`` returns nothing, the group has no member).

Having no partitions is normal when a group has more members than the largest subscribed topic
has partitions; otherwise, after :data:`STUCK_AFTER_S`, it is one of these failures, and the
trigger starts a new session (a new consumer joins afresh).
"""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

STUCK_AFTER_S = 30.0


class NoPartitions(KafkaError):
    """Joined the group but got no partitions although there are enough for every member."""


class NotJoined(KafkaError):
    """Polled the group for a while without becoming one of its members."""


class AssignmentWatch:
    def __init__(self, options: dict[str, object], group: str, stuck_after_s: float = STUCK_AFTER_S) -> None:
        self.options, self.group, self.stuck_after_s = options, group, stuck_after_s
        self._since = time.monotonic()

    def check(self, consumer: KafkaConsumer) -> None:
        """Call after each poll; raises :class:`NotJoined` or :class:`NoPartitions` when the consumer
        is stuck unassigned."""
        now = time.monotonic()
        if consumer.assignment():
            self._since = now
            return
        if now - self._since < self.stuck_after_s:
            return
        self._since = now  # looked at once per period, not after every poll
        partitions = max((len(consumer.partitions_for_topic(t) or ()) for t in consumer.subscription()), default=0)
        members = self._members()
        if members == 0:
            raise NotJoined(f"not a member of group {self.group} after {self.stuck_after_s:.0f}s: joining again")
        if members <= partitions:
            raise NoPartitions(
                f"no partitions after {self.stuck_after_s:.0f}s for {members} member(s) of group "
                f"{self.group} while a subscribed topic has {partitions}: joining again"
            )

    def _members(self) -> int:
        admin = KafkaAdminClient(**self.options, client_id="constructos-assignment-watch")
        try:
            return len(admin.describe_groups([self.group])[self.group].get("members") or [])
        finally:
            admin.close()
