"""The periodic extract-and-publish step every service runs (from its Celery task).

Rows changed since the source's watermark are read in (updated_at, pk) order, chunk by chunk;
each chunk is anonymised and published (:mod:`constructos_client.publisher`), and only after
Kafka acknowledged it does the watermark move past it, in the same transaction that holds the
watermark's row lock (so two workers never publish the same chunk at once). A worker killed
between the two re-sends that chunk on the next run: the same event ids, which the platform's
trigger lands once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from constructos_client.publisher import Publisher, PublishSpec, SourceRow
from django.conf import settings
from django.db import models, transaction
from django.db.models import Q

from publishing.models import Watermark

log = logging.getLogger(__name__)


@cache
def spec(model: str) -> PublishSpec:
    return PublishSpec.from_yaml(settings.FEATURE_SPECS / f"{model}.yaml")


@cache
def publisher() -> Publisher:
    """One producer per worker process."""
    return Publisher(settings.KAFKA_BOOTSTRAP, topic_prefix=settings.KAFKA_TOPIC_PREFIX)


def extract_and_publish(
    model: str, queryset: models.QuerySet[Any], values: Callable[[Any], dict[str, Any]], chunk: int | None = None
) -> int:
    """Publish the rows of ``queryset`` changed since the last run to ``model``'s topic; returns
    how many were sent."""
    source = f"{queryset.model._meta.db_table}:{model}"
    table = queryset.model._meta.db_table
    chunk = chunk or settings.PUBLISH_CHUNK
    Watermark.objects.get_or_create(source=source)
    sent = 0
    while True:
        with transaction.atomic():
            mark = Watermark.objects.select_for_update().get(source=source)
            after = Q(updated_at__gt=mark.updated_at) | Q(updated_at=mark.updated_at, pk__gt=mark.last_pk)
            rows = list(queryset.filter(after).order_by("updated_at", "pk")[:chunk])
            if not rows:
                return sent
            publisher().publish(spec(model), [SourceRow(table, r.pk, r.updated_at, values(r)) for r in rows])
            mark.updated_at, mark.last_pk = rows[-1].updated_at, rows[-1].pk
            mark.published += len(rows)
            mark.save(update_fields=["updated_at", "last_pk", "published"])
        sent += len(rows)
        log.info("%s: published %d rows to %s (%d this run)", source, len(rows), spec(model).topic, sent)
        if settings.PUBLISH_PAUSE_S:
            time.sleep(settings.PUBLISH_PAUSE_S)
