"""The Inventory task (Celery beat): publish the rows whose outcome is known to stock_demand's topic."""

from celery import shared_task
from publishing.columns import columns
from publishing.extract import extract_and_publish

from inventory.models import StockWeek


@shared_task(name="inventory.tasks.publish")
def publish() -> int:
    rows = StockWeek.objects.filter(units_next_week__isnull=False)
    return extract_and_publish("stock_demand", rows, columns)
