"""The Sales task (Celery beat): publish the rows whose outcome is known to lead_score's topic."""

from celery import shared_task
from publishing.columns import columns
from publishing.extract import extract_and_publish

from sales.models import Opportunity


@shared_task(name="sales.tasks.publish")
def publish() -> int:
    rows = Opportunity.objects.filter(won__isnull=False)
    return extract_and_publish("lead_score", rows, columns)
