"""A model row's columns as plain values (what the publisher anonymises and sends)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models


def columns(row: models.Model) -> dict[str, Any]:
    """Every concrete column of ``row`` (the publisher keeps only the spec's features and target)."""
    values = {}
    for field in row._meta.concrete_fields:
        value = getattr(row, field.attname)
        values[field.attname] = float(value) if isinstance(value, Decimal) else value
    return values
