"""The ERP's Celery app: RabbitMQ as broker, settings from Django's (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "constructos_erp.settings")

app = Celery("constructos_erp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
