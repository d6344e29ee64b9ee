"""GET /api/v1/models/<m>/contract: the feature contract as JSON Schema, and the server agrees with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_specs import load_spec, spec_names
from predictors.runtime.registry import predictor_class
from predictors.server import create_app
from tests.spec_data import rows


@pytest.fixture(scope="module")
def client(model_dirs: dict[str, Path]) -> Iterator[TestClient]:
    models = [predictor_class(name)(str(path)) for name, path in model_dirs.items()]
    with TestClient(create_app(models)) as c:
        yield c


def instances(name: str, n: int = 30) -> list[dict[str, Any]]:
    frame = rows(name, n, seed=5)[load_spec(name).feature_names]
    out = []
    for record in frame.astype(object).to_dict("records"):
        out.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()})
    for f in load_spec(name).features:  # JSON integers for int features
        if f.dtype == "int":
            for r in out:
                r[f.name] = None if r[f.name] is None else int(r[f.name])
    return out


@pytest.mark.parametrize("name", spec_names())
def test_the_contract_accepts_what_the_model_accepts(client: TestClient, name: str) -> None:
    response = client.get(f"/api/v1/models/{name}/contract")
    assert response.status_code == 200
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = instances(name)
    for row in good:
        validator.validate(row)
    assert client.post(f"/v1/models/{name}:predict", json={"instances": good}).status_code == 200
    spec = load_spec(name)
    assert schema["required"] == [f.name for f in spec.features if not f.optional]
    assert [o["name"] for o in schema["x-outputs"]][:1] == [spec.outputs[0][0]]


@pytest.mark.parametrize("name", spec_names())
def test_what_the_contract_refuses_the_model_refuses_naming_the_field(client: TestClient, name: str) -> None:
    validator = jsonschema.Draft202012Validator(client.get(f"/api/v1/models/{name}/contract").json())
    spec = load_spec(name)
    base = instances(name, 1)[0]
    broken: list[tuple[str, dict[str, Any]]] = []
    required = next(f for f in spec.features if not f.optional)
    broken.append((required.name, {k: v for k, v in base.items() if k != required.name}))
    for f in spec.features:
        if f.max is not None:
            broken.append((f.name, base | {f.name: f.max + 1}))
        if f.categories and not f.allow_unknown:
            broken.append((f.name, base | {f.name: "not-a-category"}))
    if spec.pii_names:
        broken.append((spec.pii_names[0], base | {spec.pii_names[0]: "someone"}))
    for field, row in broken:
        assert not validator.is_valid(row), field
        answer = client.post(f"/v1/models/{name}:predict", json={"instances": [row]})
        assert answer.status_code == 400 and answer.json()["error"].startswith(field), (field, answer.text)


def test_the_lead_score_contract_reads_like_the_spec(client: TestClient) -> None:
    schema = client.get("/api/v1/models/lead_score/contract").json()
    value = schema["properties"]["opportunity_value"]
    assert value["type"] == "number" and value["minimum"] == 0 and value["x-query-aliases"] == ["value"]
    source = schema["properties"]["lead_source"]
    assert source["type"] == ["string", "null"] and source["x-impute"] == "unknown" and "referral" in source["enum"]
    assert schema["properties"]["days_since_first_contact"]["x-impute"] == "training median"
    assert schema["additionalProperties"] is False and "contact_email" in schema["x-pii-refused"]


def test_unknown_model_is_a_404(client: TestClient) -> None:
    response = client.get("/api/v1/models/nope/contract")
    assert response.status_code == 404
    assert "nope" in response.text
