"""Logging for the streaming processes: one format, the Kafka client's own log at its own level,
and configured secrets masked in every line (a second guard behind the clients' masked password).

The Kafka client's DEBUG log prints whole fetch responses, i.e. raw records with their personal
data, so it is never enabled: its most detailed level here is INFO. The S3 client stack (botocore,
s3fs, aiohttp) logs signed request headers at DEBUG: it logs warnings and errors only."""

from __future__ import annotations

import logging
import os

from pipelines.settings import Settings, get_settings

MASK = "***"
S3_CLIENT_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp", "urllib3")


class Redact(logging.Filter):
    """Replaces each of ``secrets`` in a record's final message with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, MASK)
                record.msg, record.args = message, None
        return True


def configure_streaming_logging(level: str, kafka_level: str = "ERROR", settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(max(logging.INFO, logging.getLevelNamesMapping()[kafka_level.upper()]))
    for name in S3_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    redact = Redact([settings.kafka_sasl_password or "", os.environ.get("AWS_SECRET_ACCESS_KEY", "")])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
