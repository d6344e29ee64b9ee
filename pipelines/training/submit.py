"""Submit a training run to a Kubeflow Pipelines endpoint with kfp.Client.

The run name is derived from a caller-given key (e.g. the Kafka trigger's batch id), and a run
with that name in the experiment is reused: the same key never makes two runs.

    python -m pipelines.training.submit credit_risk --key finance-2026-11-24T10 [--host https://kfp.example]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from typing import Any

from pipelines.settings import get_settings
from pipelines.training.run import add_pipeline_arguments, pipeline_arguments

EXPERIMENT = "constructos-training"


def run_name(model: str, key: str) -> str:
    """``<model>-<key>`` made safe for KFP (lower-case, ``[a-z0-9-]``); long keys keep a hash suffix."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{model}-{key}".lower()).strip("-")
    if len(slug) > 80:
        slug = f"{slug[:63]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return slug


def find_run(client: Any, experiment_id: str, name: str) -> str | None:
    """The id of the run called ``name`` in the experiment, or None."""
    predicate = {"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": name}]}
    response = client.list_runs(experiment_id=experiment_id, filter=json.dumps(predicate), page_size=1)
    runs = response.runs or []
    return str(runs[0].run_id) if runs else None


def submit(model: str, *, key: str, client: Any = None, experiment: str = EXPERIMENT, **params: Any) -> str:
    """Start (or find) the run for ``key``; returns the KFP run id."""
    from pipelines.training.pipeline import training_pipeline

    if client is None:
        import kfp

        client = kfp.Client(host=get_settings().kfp_host)
    name = run_name(model, key)
    experiment_id = client.create_experiment(experiment).experiment_id  # returns the existing one too
    existing = find_run(client, experiment_id, name)
    if existing:
        return existing
    result = client.create_run_from_pipeline_func(
        training_pipeline,
        arguments={"model": model, **params},
        run_name=name,
        experiment_id=experiment_id,
        enable_caching=False,
    )
    return str(result.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.training.submit", description=__doc__.splitlines()[0])
    add_pipeline_arguments(parser)
    parser.add_argument("--key", required=True, help="idempotency key: one run per key")
    parser.add_argument("--host", help="KFP endpoint (default: CONSTRUCTOS_KFP_HOST)")
    parser.add_argument("--experiment", default=EXPERIMENT)
    args = parser.parse_args(argv)
    import kfp

    client = kfp.Client(host=args.host or get_settings().kfp_host)
    run_id = submit(args.model, key=args.key, client=client, experiment=args.experiment, **pipeline_arguments(args))
    print(f"run {run_name(args.model, args.key)}: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
