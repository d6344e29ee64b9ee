"""What the manifest checks report: one :class:`Finding` per problem, naming the resource and the rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Resource = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    resource: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource}: [{self.rule}] {self.message}"


def ident(res: Resource) -> str:
    meta = res.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{res.get('kind', '?')}/{where}{meta.get('name', '?')}"
