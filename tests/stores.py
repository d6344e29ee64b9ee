"""The production-like stores for the tests: PostgreSQL, the S3 server and MLflow on both.

Started by ``make stores-up`` (``scripts/stores.sh``), which writes their addresses and
credentials to ``stores.env``; the tests read it from ``CONSTRUCTOS_STORES_ENV`` (``make test``
sets it) or ``data/stores/stores.env``. Tests marked ``stores`` skip, saying so, when the stores
are not up. ``PrivateStores`` runs a set of its own on free ports (the fault tests stop them).
``tests/conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest

from pipelines.settings import Settings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "stores.sh"
S3_CLIENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
NOT_UP = "the stores are not up: run `make stores-up` (PostgreSQL, S3 server, MLflow) first"


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _answers(url: str) -> bool:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Stores:
    """Addresses and credentials of running stores (the variables of ``stores.env``)."""

    env: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.env["CONSTRUCTOS_STORES_BUCKET"]

    @property
    def endpoint(self) -> str:
        return self.env["CONSTRUCTOS_S3_ENDPOINT_URL"]

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def up(self) -> bool:
        postgres = urlsplit(self.env["CONSTRUCTOS_STORES_POSTGRES"]).netloc.split("@")[-1]
        return all(_answers(u) for u in (self.endpoint, self.tracking_uri, postgres))

    def prefix_uri(self, name: str = "") -> str:
        """A fresh ``s3://`` prefix nobody else writes to."""
        return f"s3://{self.bucket}/tests/{name or 'store'}-{uuid.uuid4().hex[:10]}"

    def client_env(self) -> dict[str, str]:
        """What a client process needs (no PostgreSQL credentials: clients go through MLflow)."""
        return {k: self.env[k] for k in ("MLFLOW_TRACKING_URI", "CONSTRUCTOS_S3_ENDPOINT_URL", *S3_CLIENT)}

    @contextmanager
    def applied(self) -> Iterator[dict[str, str]]:
        """The client variables (MLflow, S3) set in ``os.environ`` for a ``with`` block."""
        values = self.client_env()
        with mock.patch.dict(os.environ, values):
            yield values


def env_file() -> Path:
    return Path(os.environ.get("CONSTRUCTOS_STORES_ENV") or ROOT / "data" / "stores" / "stores.env")


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    """The stores of ``make stores-up``; skips the test when they are not up.

    For the session, this process gets the S3 credentials (the standard AWS variables, which
    nothing else here reads); the MLflow address only inside ``Stores.applied()``.
    """
    path = env_file()
    if not path.exists():
        pytest.skip(f"{NOT_UP} ({path} not found)")
    found = Stores(read_env(path))
    if not found.up():
        pytest.skip(f"{NOT_UP} (nothing answers at the addresses in {path})")
    with mock.patch.dict(os.environ, {k: found.env[k] for k in S3_CLIENT}):
        yield found


class PrivateStores:
    """A set of stores of its own, on free ports, in ``home`` (for tests that stop them)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {"STORES_PG_PORT": free_port(), "STORES_S3_PORT": free_port(), "STORES_MLFLOW_PORT": free_port()}

    def run(self, *args: str, timeout: float = 600) -> None:
        env = os.environ | {k: str(v) for k, v in self.ports.items()} | {"STORES_HOME": str(self.home)}
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode:
            pytest.fail(f"stores.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}", pytrace=False)

    def stores(self) -> Stores:
        return Stores(read_env(self.home / "stores.env"))


@pytest.fixture(scope="module")
def private_stores(stores: Stores) -> Iterator[PrivateStores]:
    """Stores of this module only (needs the shared ones up: their binaries are then installed).

    Their folder is outside pytest's private temporary tree: as root, the PostgreSQL cluster runs
    as the ``postgres`` user, who must reach it.
    """
    home = Path(tempfile.mkdtemp(prefix="constructos-stores-"))
    home.chmod(0o755)
    own = PrivateStores(home)
    try:
        own.run("up")
        yield own
    finally:
        own.run("down", timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["file", pytest.param("s3", marks=[pytest.mark.stores])])
def landing_settings(request: pytest.FixtureRequest, kafka_settings: Settings) -> Settings:
    """``kafka_settings`` landing into a local folder, or into a fresh prefix on the S3 server (with
    the trigger's ledger there too)."""
    if request.param == "file":
        return kafka_settings
    stores: Stores = request.getfixturevalue("stores")
    uris = {"landing_uri": stores.prefix_uri("landing"), "ledger_uri": stores.prefix_uri("ledger")}
    return kafka_settings.model_copy(update=uris | {"s3_endpoint_url": stores.endpoint})
