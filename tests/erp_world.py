"""The example ERP (examples/erp) on real parts, for tests/test_erp.py and bench/erp.py.

``ErpWorld``: a fresh PostgreSQL database on the stores of ``make stores-up`` (dropped at the
end), the RabbitMQ of ``make rabbitmq-up`` with a queue of its own, an isolated topic prefix on
the Kafka broker, and the environment the ERP's processes (Django, Celery worker and beat) read.
Django itself is set up in this process too, so tests create rows through its ORM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tests.helpers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
ERP = ROOT / "examples" / "erp"
RABBITMQ_PORT = int(os.environ.get("RABBITMQ_PORT", "55672"))
RABBITMQ_NOT_UP = f"RabbitMQ is not up at 127.0.0.1:{RABBITMQ_PORT}: run `make rabbitmq-up` first"


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def admin_connection(stores_env: dict[str, str]) -> Any:
    import psycopg

    url = urlsplit(stores_env["CONSTRUCTOS_STORES_POSTGRES"])
    return psycopg.connect(
        host=url.hostname,
        port=url.port,
        user=url.username,
        password=stores_env["CONSTRUCTOS_STORES_PG_PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )


def database_url(stores_env: dict[str, str], name: str) -> str:
    url = urlsplit(stores_env["CONSTRUCTOS_STORES_POSTGRES"])
    password = quote(stores_env["CONSTRUCTOS_STORES_PG_PASSWORD"], safe="")
    return f"postgresql://{url.username}:{password}@{url.hostname}:{url.port}/{name}"


@dataclass
class Proc:
    """A process in its own session (a Celery worker forks, training runs in children): stopped as a group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self, sig: int = signal.SIGKILL, wait_s: float = 30) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(wait_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class ErpWorld:
    database: str
    env: dict[str, str]  # what the ERP's processes read
    logs: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], **extra: str) -> Proc:
        log = self.logs / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ERP, env=os.environ | self.env | extra, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started = Proc(name, proc, log)
        self.procs.append(started)
        return started

    def celery(self, what: str, **extra: str) -> Proc:
        """``worker`` (one process: --pool=solo) or ``beat``."""
        bin_dir = Path(sys.executable).parent
        args = [str(bin_dir / "celery"), "-A", "constructos_erp", what, "--loglevel=INFO"]
        if what == "worker":
            args += ["--pool=solo", "-Q", self.env["ERP_CELERY_QUEUE"], "--without-mingle", "--without-gossip"]
        else:
            args += ["-s", str(self.logs / "beat-schedule")]
        return self.start(what, args, **extra)

    def web(self) -> tuple[Proc, str]:
        """The ERP's web server: gunicorn, one process (one circuit breaker) of four threads."""
        port = free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        args = [gunicorn, "constructos_erp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread"]
        args += ["--threads", "4"]
        proc = self.start("web", args)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(port), 60, f"the ERP's web server did not start:\n{proc.text()[-2000:]}")
        return proc, url

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, with the ERP's settings read from ``env`` (os.environ is put back)."""
    import django

    if str(ERP) not in sys.path:
        sys.path.insert(0, str(ERP))
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        django.setup()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def new_world(stores_env: dict[str, str], bootstrap: str, predict_url: str, logs: Path) -> ErpWorld:
    """A fresh database (migrated), queue and topic prefix; Django set up in this process."""
    tag = uuid.uuid4().hex[:10]
    database = f"erp_test_{tag}"
    with admin_connection(stores_env) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    env = {
        "ERP_DATABASE_URL": database_url(stores_env, database),
        "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}//",
        "ERP_CELERY_QUEUE": f"erp-test-{tag}",
        "KAFKA_BOOTSTRAP": bootstrap,
        "CONSTRUCTOS_KAFKA_TOPIC_PREFIX": f"test-erp-{tag}.",
        "CONSTRUCTOS_FEATURE_SPECS": str(ROOT / "feature_specs"),
        "CONSTRUCTOS_PREDICT_URL": predict_url,
        "DJANGO_SETTINGS_MODULE": "constructos_erp.settings",
        "PYTHONPATH": os.pathsep.join([str(ERP), str(ROOT)]),
        "ERP_LOG_LEVEL": "INFO",
    }
    world = ErpWorld(database, env, logs)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ERP, env=os.environ | env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"migrate failed:\n{done.stdout}{done.stderr}")
    setup_django(env)
    return world


def drop_database(stores_env: dict[str, str], database: str) -> None:
    from django.db import connections

    connections.close_all()
    with admin_connection(stores_env) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def start_model_server(model_dir: Path, logs: Path, onnx: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """A real ModelServer (``python -m predictors``) serving ``lead_score`` from ``model_dir``."""
    http_port, grpc_port = free_port(), free_port()
    args = [sys.executable, "-m", "predictors", "--model_name=lead_score", f"--model_uri={model_dir}"]
    args += [f"--http_port={http_port}", f"--grpc_port={grpc_port}", *([] if onnx else ["--no_onnx"])]
    env = os.environ | {"CONSTRUCTOS_DATA_DIR": str(logs / "server-data")}
    with (logs / "model-server.log").open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    wait_ready(url, proc, timeout=300)
    httpx.get(f"{url}/api/v1/predict/lead_score?industry=Energy&value=1", timeout=30)  # first call warms up
    return proc, url


def wait_until(condition: Callable[[], Any], timeout: float, message: str | Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(message() if callable(message) else message)
