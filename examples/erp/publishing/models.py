from datetime import UTC, datetime

from django.db import models

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Watermark(models.Model):
    """How far a source table has been published: the last (updated_at, pk) sent and acknowledged."""

    source = models.CharField(max_length=100, unique=True)
    updated_at = models.DateTimeField(default=EPOCH)
    last_pk = models.BigIntegerField(default=0)
    published = models.BigIntegerField(default=0)  # events acknowledged by Kafka, re-sends included

    def __str__(self) -> str:
        return f"{self.source} @ {self.updated_at.isoformat()} #{self.last_pk}"
