"""Shared fixtures: small trained models saved as MLflow model directories (skops, no pickle)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_specs import spec_names
from tests.helpers import save_trained_model

pytest_plugins = [
    "tests.kafka_broker",  # real-broker fixtures: kafka_broker, kafka_settings
    "tests.stores",  # PostgreSQL + S3 + MLflow of `make stores-up`: stores, private_stores
    "tests.oip_server",  # a real ModelServer for the OIP client and schema tests
    "tests.kube_cluster",  # the real API server of `make cluster-up`: kube
    "tests.kube_node",  # the real node of `make node-up` and the platform on it: node, platform
]

# Hermetic: a test that forgets to choose its own data folder writes to scratch space, and the
# session fails if anything (an MLflow store, say) was written into the checkout.
os.environ.setdefault("CONSTRUCTOS_DATA_DIR", tempfile.mkdtemp(prefix="constructos-tests-"))
ROOT = Path(__file__).resolve().parents[1]
STRAYS = ("mlruns", "mlflow.db", "data")

#: The longest test files, started first so that no worker is left with one of them at the end
#: (``make test`` hands each file whole to one of its workers, in this order).
SLOWEST_FIRST = (
    "test_node_platform.py",
    "test_closed_loop.py",
    "test_trigger_training.py",
    "test_erp.py",
    "test_launch.py",
    "test_pipeline.py",
    "test_add_a_model.py",
    "test_model_quality.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout() -> Iterator[None]:
    before = {name for name in STRAYS if (ROOT / name).exists()}
    yield
    written = {name for name in STRAYS if (ROOT / name).exists()} - before
    assert not written, f"tests wrote into the checkout: {sorted(written)}"


#: MLflow exports what code sets in-process (``set_tracking_uri``, ``set_registry_uri``,
#: ``set_experiment``) as MLFLOW_* variables to every later child process, which then talks to
#: another test's store (a model registered into a stale registry, a foreign experiment id).
MLFLOW_ENV = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


@pytest.fixture(autouse=True)
def no_exported_mlflow_settings() -> Iterator[None]:
    """After each test (and what its module's fixtures set up) the MLFLOW_* environment is the
    session's again."""
    yield
    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[name]
    os.environ.update(MLFLOW_ENV)


#: Every model the platform knows: the discovered specs (a YAML file added is a model tested).
SPECS = spec_names()


@pytest.fixture(params=SPECS)
def spec_name(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over every discovered spec."""
    return str(request.param)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained model directory per discovered spec, shared by the whole session."""
    root = tmp_path_factory.mktemp("models")
    return {name: save_trained_model(name, root / name) for name in SPECS}


@pytest.fixture(scope="session")
def kustomize() -> str:
    """The pinned kustomize (`make kustomize`, Go), exported as KUSTOMIZE for the code under test."""
    from pipelines.kustomize import find_kustomize

    found = find_kustomize()
    if not found and shutil.which("go"):
        subprocess.run(["make", "-s", "kustomize"], cwd=ROOT, check=True)
        asked = subprocess.run(["make", "-s", "print-KUSTOMIZE"], cwd=ROOT, capture_output=True, text=True, check=True)
        found = asked.stdout.strip()
    if not found:
        pytest.skip("no kustomize and no Go to install it (`make kustomize`)")
    os.environ["KUSTOMIZE"] = found
    return found
