"""A real Kafka broker for the tests, started with the same script as ``make kafka-up``.

``kafka_broker`` (session): reuses a broker that answers at ``KAFKA_BOOTSTRAP`` (default
127.0.0.1:9092), or starts one for the run (one for all pytest-xdist workers) and stops it at the end.
``kafka_settings``: settings of an isolated world on that broker (own topic prefix, data dir and
consumer group), so tests neither see nor disturb each other's data.
``Broker`` runs one of its own (tests that stop it); ``TriggerProcess`` runs ``python -m pipelines.streaming.trigger``.
``tests/conftest.py`` registers this module as a plugin, so every test can ask for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.settings import Settings
from pipelines.streaming.trigger.processes import descendants, parent
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka.sh"


def answers(bootstrap: str, timeout: float = 1.0) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One broker run by ``scripts/kafka.sh`` from ``home`` (its data survives ``down``/``up``)."""

    bootstrap: str
    home: Path
    controller_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # more settings of scripts/kafka.sh

    @classmethod
    def private(cls, home: Path) -> Broker:
        """A broker of its own on free ports (for tests that stop and start it)."""
        return cls(f"127.0.0.1:{free_port()}", home, free_port())

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = os.environ | self.env | {"KAFKA_BOOTSTRAP": self.bootstrap, "KAFKA_HOME_DIR": str(self.home)}
        if self.controller_port:
            env["KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def up(self) -> None:
        done = self._script("up", timeout=600)
        if done.returncode:
            pytest.fail(f"could not start Kafka with {SCRIPT.name}:\n{done.stdout}{done.stderr}", pytrace=False)

    def down(self) -> None:
        self._script("down", timeout=120)


class TriggerProcess:
    """``python -m pipelines.streaming.trigger`` with the given settings; its log is collected line by line."""

    def __init__(
        self, settings: Settings, model: str, *args: str, poll_records: int = 1000, retrain: bool = False
    ) -> None:
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "CONSTRUCTOS_DATA_DIR": str(settings.data_dir),
            "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "CONSTRUCTOS_TRIGGER_GROUP": settings.trigger_group,
            "CONSTRUCTOS_TRIGGER_MAX_POLL_RECORDS": str(poll_records),
            "CONSTRUCTOS_KAFKA_RETRY_MAX_S": "2",
            "CONSTRUCTOS_PIPELINE_RUNNER": settings.pipeline_runner,
        }
        if settings.landing_uri:  # an s3:// landing store (credentials: the AWS variables of os.environ)
            env["CONSTRUCTOS_LANDING_URI"] = settings.landing_uri
            env["CONSTRUCTOS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url or ""
        if settings.ledger_uri:
            env["CONSTRUCTOS_LEDGER_URI"] = settings.ledger_uri
            env["CONSTRUCTOS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url or ""
        for name in ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password"):
            if value := getattr(settings, f"kafka_{name}"):
                env[f"CONSTRUCTOS_KAFKA_{name.upper()}"] = str(value)
        command = [
            sys.executable,
            "-m",
            "pipelines.streaming.trigger",
            "--models",
            model,
            *([] if retrain else ["--no-retrain"]),
            "--log-level",
            "DEBUG",
        ]
        self.proc = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(bool(re.search(pattern, line)) for line in list(self.lines)) < count:
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                raise AssertionError(f"trigger exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.dump_stacks()
                raise AssertionError(f"no {pattern!r} x{count} within {timeout}s:\n{self.log(200)}")
            time.sleep(0.002)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def dump_stacks(self) -> None:
        """Have the trigger and its landing child write every thread's stack to the log (SIGUSR1):
        a wait that timed out then says where it hung. The fork server between them is left alone."""
        below = descendants(self.proc.pid)
        children = {p for p in below if parent(p) == self.proc.pid}
        for pid in [self.proc.pid, *(p for p in below if p not in children)]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.5)  # one after the other: their stacks do not interleave

    def log(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])


#: where the broker the tests start themselves lives: one per run, shared by the pytest-xdist workers
#: (they inherit this from the controller, which stops the broker at the end of the run).
SHARED_HOME = "CONSTRUCTOS_TEST_KAFKA_HOME"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without workers)
        os.environ[SHARED_HOME] = tempfile.mkdtemp(prefix="constructos-test-kafka-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not (home := os.environ.pop(SHARED_HOME, "")):
        return
    if (Path(home) / "broker").exists():
        Broker(_bootstrap(), Path(home) / "broker").down()
    shutil.rmtree(home, ignore_errors=True)


def _bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture(scope="session")
def kafka_broker() -> str:
    """Bootstrap address of a running broker: the one at ``KAFKA_BOOTSTRAP``, or one started for this
    run by the first worker that needs it (the others wait for it on a lock)."""
    bootstrap = _bootstrap()
    if answers(bootstrap):
        return bootstrap
    home = Path(os.environ[SHARED_HOME])
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not answers(bootstrap):
            Broker(bootstrap, home / "broker").up()
    return bootstrap


def isolated_settings(bootstrap: str, data_dir: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings().model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "data_dir": data_dir,
            "kafka_topic_prefix": f"test-{tag}.",
            "trigger_group": f"trigger-{tag}",
        }
    )


@pytest.fixture
def kafka_settings(kafka_broker: str, tmp_path: Path) -> Settings:
    """Settings of a fresh world on the session broker."""
    return isolated_settings(kafka_broker, tmp_path / "data")
