"""The KFP side of training, as far as it goes without a KFP API server (none installs here).

* The compiled IR loads in kfp's own parsers: the ``PipelineSpec`` protobuf (strict: an unknown
  field fails) and ``kfp.components.load_component_from_file``.
* ``submit`` with a real ``kfp.Client`` against :mod:`tests.kfp_api`, a stand-in that checks every
  request against the ``kfp-server-api`` v2beta1 models: run name, experiment, parameters, and one
  run per idempotency key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kfp
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from feature_specs import load_spec, spec_names
from pipelines.training.compile import compile_all, pipeline_name
from pipelines.training.submit import EXPERIMENT, run_name, submit
from tests.kafka_broker import ROOT
from tests.kfp_api import KfpApi

STEPS = {"extract", "validate", "tune", "train", "evaluate", "condition-1"}


def parse(doc: dict[str, Any]) -> pipeline_spec_pb2.PipelineSpec:
    return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())  # ignore_unknown_fields=False


def test_the_compiled_ir_loads_in_kfps_own_parsers(tmp_path: Path) -> None:
    written = compile_all(tmp_path)
    assert {p.stem for p in written} == {"training", *spec_names()}
    for path in written:
        spec = parse(yaml.safe_load(path.read_text()))
        assert set(spec.root.dag.tasks) == STEPS
        assert spec.deployment_spec["executors"]["exec-train"]["container"]["image"].startswith(
            "ghcr.io/constructos/ml-platform:"
        )
        component = kfp.components.load_component_from_file(str(path))
        assert component.name == spec.pipeline_info.name
        assert {"model", "hyperparameters", "since", "until", "seed"} <= set(component.component_spec.inputs or {})
    for model in spec_names():
        spec = parse(yaml.safe_load((tmp_path / f"{model}.yaml").read_text()))
        assert spec.pipeline_info.name == pipeline_name(model)
        defaults = spec.root.input_definitions.parameters
        assert defaults["model"].default_value.string_value == model
        # the spec (and the tune step) supply the parameters; a run's `hyperparameters` override them
        assert json_format.MessageToDict(defaults["hyperparameters"].default_value) == {}
        assert load_spec(model).estimator.params


@pytest.fixture
def kfp_api() -> Iterator[tuple[KfpApi, str]]:
    api = KfpApi()
    server, url = api.serve()
    yield api, url
    server.shutdown()
    assert not api.refused, api.refused  # every request kfp.Client sent was valid v2beta1
    assert not api.unhandled, api.unhandled


def test_submit_creates_one_valid_run_per_key(kfp_api: tuple[KfpApi, str]) -> None:
    api, url = kfp_api
    client = kfp.Client(host=url)
    key = "finance-2026-11-24T10"
    first = submit("credit_risk", key=key, client=client, hyperparameters={"learning_rate": 0.05}, seed=3)
    again = submit("credit_risk", key=key, client=client, hyperparameters={"learning_rate": 0.05}, seed=3)
    other = submit("lead_score", key=key, client=client)
    assert first == again != other
    assert len(api.runs) == 2 and len(api.experiments) == 1

    (experiment,) = api.experiments.values()
    assert experiment.display_name == EXPERIMENT
    created = [r.body for r in api.requests if r.route == "run_service_create_run"]
    assert [r.display_name for r in created] == [run_name("credit_risk", key), run_name("lead_score", key)]
    run = created[0]
    assert run.experiment_id == experiment.experiment_id
    assert run.runtime_config.parameters == {
        "model": "credit_risk",
        "hyperparameters": {"learning_rate": 0.05},
        "seed": 3,
    }
    spec = parse(run.pipeline_spec)
    assert set(run.runtime_config.parameters) <= set(spec.root.input_definitions.parameters)
    assert set(spec.root.dag.tasks) == STEPS
    # the key is looked up before anything is created: a list by exact display name in the experiment
    lookups = [r for r in api.requests if r.route == "run_service_list_runs"]
    assert len(lookups) == 3
    assert lookups[0].query["experiment_id"] == experiment.experiment_id
    predicate = json.loads(lookups[0].query["filter"])["predicates"][0]
    assert predicate == {"key": "display_name", "operation": "EQUALS", "stringValue": run.display_name}


def test_the_submit_command_against_the_stand_in(kfp_api: tuple[KfpApi, str]) -> None:
    api, url = kfp_api
    command = [sys.executable, "-m", "pipelines.training.submit", "stock_demand", "--key", "inventory-42",
               "--host", url, "--hp", "max_iter=50"]  # fmt: skip
    outputs = [subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout
               for _ in range(2)]  # fmt: skip
    (run,) = api.runs.values()
    assert all(f"run stock-demand-inventory-42: {run.run_id}" in out for out in outputs), outputs
    parameters = run.runtime_config.parameters
    assert parameters["model"] == "stock_demand" and parameters["hyperparameters"] == {"max_iter": 50}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"display_name": "r", "experiment_id": "e", "pipeline_spec": {}, "bogus": 1}, "bogus"),
        ({"display_name": "r", "experiment_id": "e", "runtime_config": {"parameters": 3}}, "runtime_config.parameters"),
        ({"display_name": "r", "experiment_id": "e", "state": "DONE"}, "state"),
        ({"display_name": 7}, "display_name"),
    ],
)
def test_the_stand_in_refuses_what_the_api_does_not_define(body: dict[str, Any], named: str) -> None:
    api = KfpApi()
    status, answer = api.handle("POST", "/apis/v2beta1/runs", json.dumps(body).encode())
    assert status == 400 and named in answer["error"], answer
    status, answer = api.handle("GET", "/apis/v2beta1/runs?order=asc", b"")
    assert status == 400 and "order" in answer["error"]
    status, answer = api.handle("GET", "/apis/v1beta1/runs", b"")
    assert status == 404
