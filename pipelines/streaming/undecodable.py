"""Records the Kafka client cannot decode: find the one a failed ``poll`` stopped at.

The broker accepts records that kafka-python (3.0) cannot read: a header key that is not UTF-8, a
codec the client lacks (snappy), a batch its decoder refuses. ``poll`` then raises (usually
``CorruptRecordError``) without saying which partition, and raises again at the same offset
forever. :func:`find_undecodable` reads the records each assigned partition would deliver next,
one at a time, with a consumer of its own outside the group, and returns the first it cannot
decode; the trigger dead-letters what can be said about it and seeks past it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition


@dataclass(frozen=True)
class Undecodable:
    partition: TopicPartition
    offset: int
    error: str  # the client's exception, as text (no record content: the client never decoded it)


_BYTES = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def describe(exc: BaseException) -> str:
    """The client's error as text, without the record bytes some errors quote (a header key that is
    not UTF-8 is quoted whole by ``UnicodeDecodeError``: it may hold a personal value)."""
    return _BYTES.sub("<bytes>", f"{type(exc).__name__}: {exc}")[:500]


def find_undecodable(
    options: Mapping[str, Any], positions: Mapping[TopicPartition, int], timeout_s: float = 5.0
) -> Undecodable | None:
    """The first record at ``positions`` (partition → next offset) that the client cannot decode, or
    None (the failure was elsewhere: the caller reconnects). A non-Kafka exception from the decoder
    (a codec library's) counts too."""
    probe = KafkaConsumer(
        **options, enable_auto_commit=False, max_poll_records=1, metrics_enabled=False, check_crcs=True
    )
    try:
        for tp, offset in positions.items():
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    if probe.poll(timeout_ms=200, max_records=1):
                        break  # decodable: this partition is not the one
                except KafkaError as exc:
                    if getattr(exc, "retriable", False) and not _decoding(exc):
                        continue
                    return Undecodable(tp, offset, describe(exc)) if _decoding(exc) else None
                except Exception as exc:  # a codec library's own error
                    return Undecodable(tp, offset, describe(exc))
        return None
    finally:
        probe.close(autocommit=False, timeout_ms=2000)


def _decoding(exc: KafkaError) -> bool:
    return type(exc).__name__ in ("CorruptRecordError", "UnsupportedCodecError", "InvalidRecordError")
