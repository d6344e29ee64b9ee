"""The MLflow aliases a rollout moves: ``champion`` (serving) and ``challenger`` (canary)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pipelines.rollout.state import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient


def read_aliases(client: MlflowClient, model: str) -> dict[str, str | None]:
    from mlflow.exceptions import MlflowException

    found: dict[str, str | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            found[alias] = str(client.get_model_version_by_alias(model, alias).version)
        except MlflowException:
            found[alias] = None
    return found


def move_aliases(client: MlflowClient, model: str, aliases: dict[str, str | None]) -> None:
    from mlflow.exceptions import MlflowException

    for alias, version in aliases.items():
        if version is None:
            with contextlib.suppress(MlflowException):  # already gone: dropping is idempotent
                client.delete_registered_model_alias(model, alias)
        else:
            client.get_model_version(model, version)  # raises if the version does not exist
            client.set_registered_model_alias(model, alias, version)
