"""Kafka connection settings shared by every Kafka client of the platform (serving and training)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Secret(str):
    """A password as the Kafka clients need it (a ``str``), shown as ``'***'`` wherever a client
    logs its configuration (kafka-python's admin client does, at DEBUG)."""

    def __repr__(self) -> str:
        return "'***'"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSTRUCTOS_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "CONSTRUCTOS_KAFKA_BOOTSTRAP")
    )
    """Kafka bootstrap servers, comma-separated."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security protocol."""
    kafka_sasl_mechanism: str | None = None
    """SASL mechanism, e.g. SCRAM-SHA-512 or PLAIN."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    """SASL password (never logged)."""
    kafka_ssl_cafile: str | None = None
    """CA bundle that signs the brokers' certificates."""
    kafka_ssl_certfile: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    kafka_ssl_keyfile: str | None = None
    """Private key (PEM) of the client certificate."""
    kafka_topic_prefix: str = ""
    """Prepended to every topic name, e.g. ``staging.`` when environments share a cluster."""

    def kafka_options(self) -> dict[str, object]:
        """kafka-python client options (bootstrap + security), shared by every client."""
        options: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": Secret(self.kafka_sasl_password or ""),
            }
        for name in ("cafile", "certfile", "keyfile"):
            if value := getattr(self, f"kafka_ssl_{name}"):
                options[f"ssl_{name}"] = value
        return options

    def topic(self, name: str) -> str:
        return f"{self.kafka_topic_prefix}{name}"
