"""A small ConstructOS ERP: Finance, Sales and Inventory services calling and feeding the ML platform."""

from constructos_erp.celery import app as celery_app

__all__ = ["celery_app"]
