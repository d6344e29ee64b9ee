"""The training steps as plain functions: importable, unit-tested, wrapped by ``pipelines.training.components``."""

import logging
import os
import sys


def log_to_stdout() -> None:
    """One readable line per event in the task logs (kfp.local prints them under the task name)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow configures its loggers on import
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    for noisy in ("alembic", "mlflow", "great_expectations", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
