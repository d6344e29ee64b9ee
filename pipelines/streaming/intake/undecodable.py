"""Records the Kafka client cannot decode: find the one a failed ``poll`` stopped at.

The broker accepts records that kafka-python (3.0) cannot read: a header key that is not UTF-8, a
codec the client lacks (snappy), a batch its decoder refuses. ``poll`` then raises (usually
``CorruptRecordError``) without saying which partition, and raises again at the same offset
forever. :func:`find_undecodable` reads the records each assigned partition would deliver next,
one at a time, with a consumer of its own outside the group, and returns the first it cannot
decode; the trigger dead-letters what can be said about it and seeks past it.

**Its bytes, where they can be had.** The probe keeps the raw record batches it fetches and, once
the client has failed on one, reads the record at the failing offset itself (record format v2,
header keys left as bytes): its key and value then go into the dead letter (through the same PII
scrubbing as any other). A batch that cannot be read that way (a codec the client lacks, an older
record format, a client whose internals differ) gives no bytes: the dead letter has the reason and
the source offset only.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import decode_varint
from kafka.structs import TopicPartition


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]]


@dataclass(frozen=True)
class Undecodable:
    partition: TopicPartition
    offset: int
    error: str  # the client's exception, as text (without the record bytes it may quote)
    raw: RawRecord | None = None  # the record as read here, when it could be


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
    fetched = _keep_raw_batches(probe)
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
                    return (
                        Undecodable(tp, offset, describe(exc), read_record(fetched.get(tp), offset))
                        if _decoding(exc)
                        else None
                    )
                except Exception as exc:  # a codec library's own error
                    return Undecodable(tp, offset, describe(exc), read_record(fetched.get(tp), offset))
        return None
    finally:
        probe.close(autocommit=False, timeout_ms=2000)


def _decoding(exc: KafkaError) -> bool:
    return type(exc).__name__ in ("CorruptRecordError", "UnsupportedCodecError", "InvalidRecordError")


def _keep_raw_batches(probe: KafkaConsumer) -> dict[TopicPartition, bytes]:
    """Per partition, the raw bytes of the probe's last fetch (empty where the client's internals
    differ from kafka-python 3.0's: the bytes are then not recovered)."""
    fetched: dict[TopicPartition, bytes] = {}
    fetcher = getattr(probe, "_fetcher", None)
    parse = getattr(fetcher, "_parse_fetched_data", None)
    if parse is None:
        return fetched

    def keep(completed: Any) -> Any:
        with contextlib.suppress(AttributeError, TypeError):
            fetched[completed.topic_partition] = bytes(completed.partition_data.records)
        return parse(completed)

    fetcher._parse_fetched_data = keep  # type: ignore[union-attr]
    return fetched


def read_record(data: bytes | None, offset: int) -> RawRecord | None:
    """The record at ``offset`` in raw fetched ``data``, read leniently (header keys stay bytes), or
    None when it cannot be read."""
    if not data:
        return None
    try:
        batches = MemoryRecords(data)
        while (batch := batches.next_batch()) is not None:
            if batch.magic == 2 and batch.base_offset <= offset <= batch.last_offset:
                return _in_batch(batch, offset)
    except Exception:  # whatever the bytes hold: no recovery, never an error
        return None
    return None


def _in_batch(batch: Any, offset: int) -> RawRecord | None:
    batch._maybe_uncompress()
    buffer, pos = batch._buffer, batch._pos
    for _ in range(batch._num_records):
        length, pos = decode_varint(buffer, pos)
        end = pos + length
        _, pos = decode_varint(buffer, pos)  # attributes
        _, pos = decode_varint(buffer, pos)  # timestamp delta
        delta, pos = decode_varint(buffer, pos)
        if batch.base_offset + delta != offset:
            pos = end
            continue
        key, pos = _bytes(buffer, pos)
        value, pos = _bytes(buffer, pos)
        count, pos = decode_varint(buffer, pos)
        headers = []
        for _ in range(max(count, 0)):
            name, pos = _bytes(buffer, pos)
            data, pos = _bytes(buffer, pos)
            headers.append((name or b"", data))
        return RawRecord(key, value, headers)
    return None


def _bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    return bytes(buffer[pos : pos + size]), pos + size
