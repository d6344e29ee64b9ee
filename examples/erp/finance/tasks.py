"""The Finance task (Celery beat): publish the rows whose outcome is known to credit_risk's topic."""

from celery import shared_task
from publishing.columns import columns
from publishing.extract import extract_and_publish

from finance.models import PaymentHistory


@shared_task(name="finance.tasks.publish")
def publish() -> int:
    rows = PaymentHistory.objects.filter(defaulted_90d__isnull=False)
    return extract_and_publish("credit_risk", rows, columns)
