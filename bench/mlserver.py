"""Seldon MLServer (its scikit-learn runtime) serving the same fitted estimator as ours, for the
serving benchmark, and Triton's perf_analyzer where it installs.

MLServer is not a dependency of this project: the benchmark installs it into an environment of its
own (``uv venv`` + ``uv pip install``) in the tools cache, keyed by the pinned versions, with the
scikit-learn and numpy of our lock so that the pickled estimator loads; later runs reuse it.

What MLServer serves is what ``StockModel`` (``bench/baselines.py``) scores: the estimator step of
our trained pipeline, fed the benchmark's row already transformed to its numeric array. Its
settings (``settings.json``), chosen to compare like with like — one process on one core:

- ``parallel_workers: 0``: inference runs in the server's own process. MLServer's default (1) hands
  every request to a separate worker process through a queue: two processes on the one core, and
  an extra hop per request. Ours is one process.
- ``debug: false``: no access log line per request (MLServer's debug mode turns uvicorn's access
  log on); ours logs none by default either.
- ``gzip_enabled: false``: ours does not compress; MLServer would not compress an answer this small
  anyway, but its GZip middleware would still wrap every request.
- metrics stay on, on a free port of their own: that listener only works when scraped (nobody
  does here), and the per-request Prometheus middleware counts requests as ours does.

Every choice leaves MLServer its fastest one-core configuration, never a slower one.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.load import tools_cache

MLSERVER_VERSION = "1.7.1"
PERF_ANALYZER_VERSION = "2.60.0"


def _python_tag() -> str:
    return f"py{sys.version_info.major}.{sys.version_info.minor}"


def _venv(where: Path, packages: list[str]) -> Path:
    """A virtual environment at ``where`` with ``packages`` (uv), made once: a stamp file marks
    it complete, and a half-made one is made again."""
    stamp = where / ".complete"
    if stamp.exists():
        return where
    uv = shutil.which("uv")
    if not uv:
        raise RuntimeError("uv is not installed (`make install` installs it)")
    shutil.rmtree(where, ignore_errors=True)
    print(f"  installing {' '.join(packages)} into {where}", flush=True)
    for cmd in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(where)],
        [uv, "pip", "install", "--quiet", "--python", str(where / "bin" / "python"), *packages],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(where, ignore_errors=True)
            raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr.strip()}")
    stamp.touch()
    return where


def environment() -> Path:
    """MLServer's own environment in the tools cache (installed on first use)."""
    sklearn, numpy = version("scikit-learn"), version("numpy")
    where = tools_cache() / f"mlserver-{MLSERVER_VERSION}-sklearn-{sklearn}-numpy-{numpy}-{_python_tag()}"
    packages = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}"]
    return _venv(where, [*packages, f"scikit-learn=={sklearn}", f"numpy=={numpy}"])


def repository(env: Path, folder: Path, model: str, estimator: Any, ports: dict[str, int]) -> list[str]:
    """Write MLServer's model folder (the estimator as ``model.joblib``, its settings) and return
    the command that serves it. ``ports``: ``http``, ``grpc`` and ``metrics``."""
    folder.mkdir(parents=True, exist_ok=True)
    pickled = folder / "estimator.pickle"
    pickled.write_bytes(pickle.dumps(estimator))
    # joblib is MLServer's format; it is not a dependency of ours, so MLServer's environment writes
    # the file (which also proves the estimator loads there)
    convert = "import joblib, pickle, sys; joblib.dump(pickle.load(open(sys.argv[1], 'rb')), sys.argv[2])"
    subprocess.run([str(env / "bin" / "python"), "-c", convert, str(pickled), str(folder / "model.joblib")], check=True)
    pickled.unlink()
    settings = {
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
        "host": "127.0.0.1",
        "parallel_workers": 0,
        "debug": False,
        "gzip_enabled": False,
    }
    model_settings = {
        "name": model,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return [str(env / "bin" / "mlserver"), "start", str(folder)]


def v2_body(array: Any) -> str:
    """The transformed row as one FP64 ``[1, n]`` tensor, asking for ``predict_proba``."""
    rows = [[float(v) for v in row] for row in array.tolist()]
    tensor = {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})


def probability(answer: dict[str, Any]) -> float:
    """P(positive) from MLServer's ``predict_proba`` output (shape ``[1, 2]``, flattened)."""
    (output,) = answer["outputs"]
    return float(output["data"][1])


def perf_analyzer() -> tuple[str | None, str]:
    """Triton's perf_analyzer from PyPI (package ``perf-analyzer``), in its own environment in the
    tools cache; (its path, "") or (None, why not)."""
    where = tools_cache() / f"perf-analyzer-{PERF_ANALYZER_VERSION}-{_python_tag()}"
    try:
        env = _venv(where, [f"perf-analyzer=={PERF_ANALYZER_VERSION}"])
    except RuntimeError as exc:
        reason = next((line for line in str(exc).splitlines() if "platform" in line), str(exc).splitlines()[-1])
        return None, reason.strip()
    found = env / "bin" / "perf_analyzer"
    return (str(found), "") if found.exists() else (None, "the package installed no perf_analyzer binary")
