"""Publish ERP rows to a model's topic, anonymised on the service's side.

    spec = PublishSpec.from_yaml("feature_specs/lead_score.yaml")   # the model's feature spec
    with Publisher("kafka:9092") as publisher:
        publisher.publish(spec, [SourceRow("sales_opportunity", o.pk, o.updated_at, values(o)) ...])

* **Nothing personal leaves the service:** an event carries the spec's features and target only.
  The spec's PII fields, and any column the spec does not declare (it may be personal data
  nobody declared), are dropped here, before the event is encoded.
* **A re-run sends no new event:** the event id is derived from the source row's table, primary
  key and ``updated_at``, so publishing the same change twice sends the same id (the platform's
  trigger lands it once); a later change of the row is a new event.
* Events are JSON keyed by their id (a re-sent event lands on the same partition), sent with
  ``acks=all`` and the idempotent producer; :meth:`Publisher.publish` returns once every event is
  acknowledged, or raises.

Needs the ``publish`` extra (kafka-python, PyYAML).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple


@dataclass(frozen=True)
class PublishSpec:
    """What the publisher needs of a feature spec: the topic and which fields may leave."""

    model: str
    topic: str
    features: tuple[str, ...]
    target: str
    pii: tuple[str, ...]

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> PublishSpec:
        return cls(
            model=spec["name"],
            topic=spec["source_topic"],
            features=tuple(f["name"] for f in spec["features"]),
            target=spec["target"]["name"],
            pii=tuple(p["name"] for p in spec.get("pii") or ()),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> PublishSpec:
        import yaml

        return cls.from_mapping(yaml.safe_load(Path(path).read_text()))

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset((*self.features, self.target)) - frozenset(self.pii)


class SourceRow(NamedTuple):
    """One row of a service's table: where it comes from, when it last changed, its columns."""

    table: str
    pk: Any
    updated_at: datetime
    values: Mapping[str, Any]


def event_id(table: str, pk: Any, updated_at: datetime) -> str:
    """The id of one version of a row: the same for the same (table, primary key, updated_at)."""
    stamp = _utc(updated_at).isoformat(timespec="microseconds")
    digest = hashlib.sha256(f"{table}\x1f{pk}\x1f{stamp}".encode()).hexdigest()[:24]
    return f"{table[:60]}-{str(pk)[:60]}-{digest}"


def anonymise(spec: PublishSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The columns that may leave the service: the spec's features and target, nothing else."""
    allowed = spec.allowed
    return {k: _plain(v) for k, v in values.items() if k in allowed}


def to_event(spec: PublishSpec, row: SourceRow) -> dict[str, Any]:
    return {
        "event_id": event_id(row.table, row.pk, row.updated_at),
        "occurred_at": _utc(row.updated_at).isoformat(),
        **anonymise(spec, row.values),
    }


class Publisher:
    """Sends events with one kafka-python producer (made on first use, closed by :meth:`close`).
    ``topic_prefix``: the platform's ``CONSTRUCTOS_KAFKA_TOPIC_PREFIX`` (empty in production)."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = "", timeout_s: float = 30.0, **kafka: Any) -> None:
        self.bootstrap, self.topic_prefix, self.timeout_s = bootstrap, topic_prefix, timeout_s
        self.options = {"acks": "all", "linger_ms": 5, "bootstrap_timeout_ms": 10_000, **kafka}
        self._producer: Any = None

    def publish(self, spec: PublishSpec, rows: Iterable[SourceRow]) -> int:
        """Send one event per row to the model's topic; returns how many were acknowledged."""
        from kafka import KafkaProducer

        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap.split(","), **self.options)
        topic = self.topic_prefix + spec.topic
        futures = []
        for row in rows:
            event = to_event(spec, row)
            value = json.dumps(event, separators=(",", ":")).encode()
            futures.append(self._producer.send(topic, key=event["event_id"].encode(), value=value))
        self._producer.flush(timeout=self.timeout_s)
        failed = [f for f in futures if not f.succeeded()]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(futures)} events to {topic} were not acknowledged")
        return len(futures)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("updated_at must be timezone-aware (Django: USE_TZ = True)")
    return when.astimezone(UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
