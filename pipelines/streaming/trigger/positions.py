"""Where each assigned partition stands, for the health port's stall check."""

from __future__ import annotations

import time

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from pipelines.streaming.trigger.health import Progress


class Positions:
    """Per partition: the offset after its last settled record; tells :attr:`progress` what is
    assigned, what settled and how many records wait."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.settled_to: dict[TopicPartition, int] = {}  # per partition: the offset after the last settled record
        self._looked = 0.0

    def settled(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, at in offsets.items():
            self.settled_to[tp] = at.offset
        self.progress.settled((tp.topic, tp.partition) for tp in offsets)

    def look(self, consumer: KafkaConsumer, now: bool = False) -> None:
        """Tell :attr:`progress` what is assigned and how many records wait on each (once a second)."""
        if not now and time.monotonic() - self._looked < 1.0:
            return
        self._looked = time.monotonic()
        assigned = consumer.assignment()
        self.progress.assigned((tp.topic, tp.partition) for tp in assigned)
        for tp in assigned:
            end = consumer.highwater(tp)
            if end is None:  # not fetched yet: nothing known to wait
                continue
            start = self.settled_to.get(tp)
            if start is None:
                start = consumer.position(tp, timeout_ms=1000)
            if start is not None:
                self.progress.waiting((tp.topic, tp.partition), end - start)
