"""Settings of the example ERP; everything a service team sets comes from the environment.

ERP_DATABASE_URL              postgresql://user:password@host:port/database
CELERY_BROKER_URL             amqp://guest:guest@127.0.0.1:55672//   (make rabbitmq-up)
ERP_CELERY_QUEUE              the queue of the ERP's tasks (default erp)
ERP_PUBLISH_INTERVAL_S        how often Celery beat runs each service's extract-and-publish task
ERP_PUBLISH_CHUNK             rows per published chunk (the watermark advances after each)
ERP_PUBLISH_PAUSE_S           pause between chunks (spreads the load on the database and broker)
KAFKA_BOOTSTRAP               the platform's Kafka (host:port[,host:port])
CONSTRUCTOS_KAFKA_TOPIC_PREFIX the platform's topic prefix (empty in production)
CONSTRUCTOS_FEATURE_SPECS     folder of the platform's feature specs (<model>.yaml)
CONSTRUCTOS_PREDICT_URL       the model server (http://host:port)
SALES_SCORE_BUDGET_S          the lead score's time budget on the opportunity page
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("ERP_SECRET_KEY", "example-erp-not-secret")
DEBUG = os.environ.get("ERP_DEBUG", "false").lower() == "true"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "publishing",
    "finance",
    "sales",
    "inventory",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "constructos_erp.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True, "DIRS": []}]
WSGI_APPLICATION = "constructos_erp.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"ERP_DATABASE_URL: expected postgresql://..., got scheme {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 60,
    }


DATABASES = {"default": _database(os.environ.get("ERP_DATABASE_URL", "postgresql://erp@127.0.0.1:5432/erp"))}

# --- Celery (RabbitMQ) -----------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:55672//")
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task: the task is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("ERP_CELERY_QUEUE", "erp")
PUBLISH_INTERVAL_S = float(os.environ.get("ERP_PUBLISH_INTERVAL_S", "60"))
CELERY_BEAT_SCHEDULE = {
    f"{app}-publish": {"task": f"{app}.tasks.publish", "schedule": PUBLISH_INTERVAL_S}
    for app in ("finance", "sales", "inventory")
}

# --- the ML platform ------------------------------------------------------------------------
PUBLISH_CHUNK = int(os.environ.get("ERP_PUBLISH_CHUNK", "1000"))
PUBLISH_PAUSE_S = float(os.environ.get("ERP_PUBLISH_PAUSE_S", "0"))
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
KAFKA_TOPIC_PREFIX = os.environ.get("CONSTRUCTOS_KAFKA_TOPIC_PREFIX", "")
FEATURE_SPECS = Path(os.environ.get("CONSTRUCTOS_FEATURE_SPECS", BASE_DIR.parent.parent / "feature_specs"))
PREDICT_URL = os.environ.get("CONSTRUCTOS_PREDICT_URL", "http://127.0.0.1:8080")
SALES_SCORE_BUDGET_S = float(os.environ.get("SALES_SCORE_BUDGET_S", "0.3"))

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("ERP_LOG_LEVEL", "WARNING")},
}
