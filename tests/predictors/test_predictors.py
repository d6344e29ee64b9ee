"""The three predictors answering real HTTP requests in-process (KServe app + FastAPI TestClient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_specs import Validator, load_spec
from predictors.runtime.loading import load_model
from predictors.runtime.registry import model_names, predictor_class
from predictors.server import create_app
from predictors.settings import ServingSettings
from tests.helpers import v2_body

MAX_BATCH = 50


@pytest.fixture(scope="module")
def client(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = ServingSettings(max_batch=MAX_BATCH)
    models = [predictor_class(name)(str(path), settings=settings) for name, path in model_dirs.items()]
    with TestClient(create_app(models)) as c:
        yield c


def instances(body: dict[str, Any]) -> list[dict[str, Any]]:
    rows = len(body["inputs"][0]["data"])
    return [{t["name"]: t["data"][i] for t in body["inputs"]} for i in range(rows)]


def infer(client: TestClient, name: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v2/models/{name}/infer", json=body)


def error_of(response: Any) -> str:
    assert response.status_code == 400, (response.status_code, response.text)
    return str(response.json()["error"])


# -- happy paths ------------------------------------------------------------------------


@pytest.mark.parametrize("name", model_names())
def test_v2_infer_returns_named_typed_outputs_and_version(client: TestClient, name: str) -> None:
    response = infer(client, name, v2_body(name))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == name
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    metadata = client.get(f"/v2/models/{name}").json()
    assert [o["name"] for o in metadata["outputs"]] == list(outputs)
    for declared in metadata["outputs"]:
        assert outputs[declared["name"]]["datatype"] == declared["datatype"]
        assert outputs[declared["name"]]["shape"] == [3]
    if load_spec(name).is_classifier:
        probabilities = outputs["probability"]["data"]
        assert all(0 <= p <= 1 for p in probabilities)
        threshold = load_spec(name).gate.threshold
        assert outputs["label"]["data"] == [p >= threshold for p in probabilities]
    elif (low := load_spec(name).target.min) is not None:
        assert all(p >= low - 1e-9 for p in outputs["prediction"]["data"])


def test_metadata_declares_every_feature_and_the_version(client: TestClient) -> None:
    for name in model_names():
        meta = client.get(f"/v2/models/{name}").json()
        spec = load_spec(name)
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            (f.name, f.v2_datatype, [-1]) for f in spec.features
        ]
        assert meta["versions"] == ["1"]
    assert client.get("/v2/models/credit_risk").json()["outputs"][-1] == {
        "name": "risk_grade",
        "datatype": "BYTES",
        "shape": [-1],
    }


@pytest.mark.parametrize("name", model_names())
def test_v1_and_v2_agree(client: TestClient, name: str) -> None:
    body = v2_body(name, rows=4, seed=3)
    v2 = infer(client, name, body).json()
    v1 = client.post(f"/v1/models/{name}:predict", json={"instances": instances(body)})
    assert v1.status_code == 200, v1.text
    first = v2["outputs"][0]
    assert [row[first["name"]] for row in v1.json()["predictions"]] == first["data"]
    assert v1.json()["model_version"] == "1"


def test_sales_service_query_string_call(client: TestClient) -> None:
    response = client.get("/api/v1/predict/lead_score?industry=Construction&value=5000000")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model_name", "model_version", "probability", "label", "score"}
    assert 0 <= answer["probability"] <= 1
    assert answer["score"] == round(answer["probability"] * 100)
    # the same row over V1 with the optional features left out gives the same answer
    v1 = client.post(
        "/v1/models/lead_score:predict",
        json={"instances": [{"customer_industry": "Construction", "opportunity_value": 5e6}]},
    ).json()
    assert v1["predictions"][0]["probability"] == answer["probability"]


@pytest.mark.parametrize("name", ["credit_risk", "stock_demand"])
def test_query_string_works_for_every_model(client: TestClient, name: str) -> None:
    row = instances(v2_body(name, rows=1))[0]
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in row.items()}
    response = client.get(f"/api/v1/predict/{name}", params=params)
    assert response.status_code == 200, response.text
    v1 = client.post(f"/v1/models/{name}:predict", json={"instances": [row]}).json()["predictions"][0]
    assert {k: response.json()[k] for k in v1} == v1


def test_serving_scores_equal_the_training_pipeline(client: TestClient, model_dirs: dict[str, Path]) -> None:
    """No training/serving skew: the served score is the trained sklearn pipeline's score."""
    for name in model_names():
        spec = load_spec(name)
        body = v2_body(name, rows=20, seed=11)
        served = infer(client, name, body).json()["outputs"][0]["data"]
        frame = Validator(spec).records(instances(body))
        pipeline = load_model(str(model_dirs[name])).pipeline
        expected = pipeline.predict_proba(frame)[:, 1] if spec.is_classifier else pipeline.predict(frame)
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_batch_at_the_maximum_is_accepted(client: TestClient) -> None:
    assert infer(client, "credit_risk", v2_body("credit_risk", rows=MAX_BATCH)).status_code == 200


# -- behaviour of the models ------------------------------------------------------------


def _probability(client: TestClient, name: str, rows: list[dict[str, Any]]) -> np.ndarray:
    response = client.post(f"/v1/models/{name}:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    return np.array([p["probability"] for p in response.json()["predictions"]])


def test_higher_late_payment_ratio_never_lowers_credit_risk(client: TestClient) -> None:
    base = instances(v2_body("credit_risk", rows=10, seed=5))
    ratios = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    curves = np.array(
        [_probability(client, "credit_risk", [r | {"late_payment_ratio_12m": x} for r in base]) for x in ratios]
    )
    assert (np.diff(curves, axis=0) >= 0).all()
    assert (curves[-1] > curves[0]).all()  # and it matters


def test_bigger_opportunity_from_existing_customer_scores_higher(client: TestClient) -> None:
    base = [r | {"existing_customer": True} for r in instances(v2_body("lead_score", rows=10, seed=6))]
    small = _probability(client, "lead_score", [r | {"opportunity_value": 50_000.0} for r in base])
    large = _probability(client, "lead_score", [r | {"opportunity_value": 5_000_000.0} for r in base])
    assert (large >= small).all() and (large > small).any()


def test_more_active_projects_never_lowers_demand(client: TestClient) -> None:
    base = instances(v2_body("stock_demand", rows=10, seed=8))

    def demand(projects: int) -> np.ndarray:
        rows = [r | {"active_projects_region": projects} for r in base]
        predictions = client.post("/v1/models/stock_demand:predict", json={"instances": rows}).json()["predictions"]
        return np.array([p["prediction"] for p in predictions])

    assert (demand(120) >= demand(10)).all()


# -- bad input: 400 naming the field, never a 500 -----------------------------------------


def _mutate(name: str, feature: str, **changes: Any) -> dict[str, Any]:
    body = v2_body(name)
    for tensor in body["inputs"]:
        if tensor["name"] == feature:
            tensor.update(changes)
    return body


def test_missing_required_feature(client: TestClient) -> None:
    body = v2_body("credit_risk")
    body["inputs"] = [t for t in body["inputs"] if t["name"] != "late_payment_ratio_12m"]
    assert error_of(infer(client, "credit_risk", body)).startswith(
        "late_payment_ratio_12m: required feature is missing"
    )


def test_unknown_feature(client: TestClient) -> None:
    body = v2_body("credit_risk")
    body["inputs"].append({"name": "shoe_size", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]})
    assert error_of(infer(client, "credit_risk", body)).startswith("shoe_size: unknown feature")


def test_wrong_type_value(client: TestClient) -> None:
    body = instances(v2_body("credit_risk"))
    body[1]["avg_days_to_pay"] = "forty"
    message = error_of(client.post("/v1/models/credit_risk:predict", json={"instances": body}))
    assert message.startswith("avg_days_to_pay: expected a number")


def test_wrong_v2_datatype(client: TestClient) -> None:
    body = _mutate("credit_risk", "industry_segment", datatype="FP64")
    assert error_of(infer(client, "credit_risk", body)).startswith("industry_segment: datatype FP64 does not fit")


def test_out_of_range(client: TestClient) -> None:
    body = _mutate("credit_risk", "late_payment_ratio_12m", data=[0.1, 1.7, 0.2])
    assert error_of(infer(client, "credit_risk", body)) == "late_payment_ratio_12m: value 1.7 is above the maximum 1"


def test_non_integer_for_an_int_feature(client: TestClient) -> None:
    body = instances(v2_body("credit_risk"))
    body[0]["active_projects"] = 2.5
    message = error_of(client.post("/v1/models/credit_risk:predict", json={"instances": body}))
    assert message.startswith("active_projects: expected an integer")


@pytest.mark.parametrize("text", ["1e999", "-1e999"])
def test_infinite_number(client: TestClient, text: str) -> None:
    body = json.dumps(_mutate("credit_risk", "avg_days_to_pay", data=[10.0, 20.0, 30.0])).replace("20.0", text)
    response = client.post("/v2/models/credit_risk/infer", content=body, headers={"content-type": "application/json"})
    assert "avg_days_to_pay" in error_of(response)


def test_nan_in_query_string(client: TestClient) -> None:
    response = client.get("/api/v1/predict/lead_score?industry=Construction&value=nan")
    assert error_of(response).startswith("opportunity_value: value nan at row 0 is not a finite number")


def test_nan_token_in_json(client: TestClient) -> None:
    body = json.dumps(_mutate("credit_risk", "avg_days_to_pay", data=[float("nan")] * 3))  # non-standard NaN token
    response = client.post("/v2/models/credit_risk/infer", content=body, headers={"content-type": "application/json"})
    assert error_of(response) == "avg_days_to_pay: value nan at row 0 is not a finite number"


def test_null_for_a_required_feature(client: TestClient) -> None:
    body = _mutate("credit_risk", "company_age_years", data=[1.0, None, 2.0])
    assert error_of(infer(client, "credit_risk", body)).startswith("company_age_years: missing at row 1")


def test_unknown_category(client: TestClient) -> None:
    response = client.get("/api/v1/predict/lead_score?industry=Mining&value=5000")
    assert error_of(response).startswith("customer_industry: unknown category 'Mining'")


def test_inputs_of_different_lengths(client: TestClient) -> None:
    body = _mutate("credit_risk", "avg_days_to_pay", shape=[2], data=[10.0, 20.0])
    assert "inputs differ in length" in error_of(infer(client, "credit_risk", body))


def test_shape_mismatch(client: TestClient) -> None:
    body = _mutate("credit_risk", "avg_days_to_pay", shape=[4])
    assert error_of(infer(client, "credit_risk", body)) == "avg_days_to_pay: shape [4] does not match 3 values"


def test_empty_batch(client: TestClient) -> None:
    assert "empty batch" in error_of(client.post("/v1/models/credit_risk:predict", json={"instances": []}))
    body = v2_body("credit_risk")
    for tensor in body["inputs"]:
        tensor.update(shape=[0], data=[])
    assert "empty batch" in error_of(infer(client, "credit_risk", body))


def test_batch_over_the_maximum(client: TestClient) -> None:
    message = error_of(infer(client, "credit_risk", v2_body("credit_risk", rows=MAX_BATCH + 1)))
    assert message == f"batch: {MAX_BATCH + 1} rows exceed the maximum of {MAX_BATCH}"
    rows = instances(v2_body("credit_risk", rows=1)) * (MAX_BATCH + 1)
    assert error_of(client.post("/v1/models/credit_risk:predict", json={"instances": rows})).startswith("batch:")


@pytest.mark.parametrize("route", ["/v2/models/credit_risk/infer", "/v1/models/credit_risk:predict"])
def test_non_json_body(client: TestClient, route: str) -> None:
    response = client.post(route, content=b"features=1,2,3", headers={"content-type": "application/json"})
    assert "JSON" in error_of(response) or "Unrecognized request format" in error_of(response)


def test_wrong_content_type(client: TestClient) -> None:
    body = json.dumps({"instances": instances(v2_body("credit_risk"))})
    response = client.post("/v1/models/credit_risk:predict", content=body, headers={"content-type": "text/csv"})
    assert error_of(response).startswith("body: expected a JSON object (Content-Type: application/json)")


def test_malformed_v2_request(client: TestClient) -> None:
    body = v2_body("credit_risk")
    del body["inputs"][0]["datatype"]
    assert error_of(infer(client, "credit_risk", body)) == "inputs[0].datatype: required"


def test_instances_not_objects(client: TestClient) -> None:
    response = client.post("/v1/models/credit_risk:predict", json={"instances": [[1, 2, 3]]})
    assert error_of(response).startswith("instances: every instance must be an object")


def test_query_parameter_twice(client: TestClient) -> None:
    response = client.get("/api/v1/predict/lead_score?industry=Construction&customer_industry=Energy&value=5")
    assert error_of(response).startswith("customer_industry: given twice")


def test_unknown_model_is_404(client: TestClient) -> None:
    assert client.get("/api/v1/predict/horoscope?x=1").status_code == 404


# -- loading ------------------------------------------------------------------------------


def test_a_model_that_cannot_load_is_not_ready_while_the_others_serve(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")
    models = [
        predictor_class("credit_risk")(str(model_dirs["credit_risk"])),
        predictor_class("stock_demand")(str(broken)),
        predictor_class("lead_score")(str(tmp_path / "nowhere")),
    ]
    with TestClient(create_app(models)) as c:
        assert c.get("/v2/models/credit_risk/ready").status_code == 200
        assert c.get("/v2/models/stock_demand/ready").status_code == 503
        assert c.get("/v2/models/lead_score/ready").status_code == 503
        assert c.post("/v1/models/lead_score:predict", json={"instances": []}).status_code == 503
        assert infer(c, "credit_risk", v2_body("credit_risk")).status_code == 200


def test_onnx_and_sklearn_runtimes_give_the_same_answer(model_dirs: dict[str, Path]) -> None:
    body = v2_body("stock_demand", rows=25, seed=4)
    answers = []
    for use_onnx in (True, False):
        model = predictor_class("stock_demand")(
            str(model_dirs["stock_demand"]), settings=ServingSettings(use_onnx=use_onnx)
        )
        with TestClient(create_app([model])) as c:
            answers.append(infer(c, "stock_demand", body).json()["outputs"][0]["data"])
        assert model.scorer is not None and model.scorer.runtime == ("onnxruntime" if use_onnx else "sklearn")
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-4)


def test_pickled_models_are_refused(tmp_path: Path) -> None:
    """No pickle: only skops artefacts load, with the types our code trusts (not the file's list)."""
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    mlflow.sklearn.save_model(
        DummyClassifier().fit([[0], [1]], [0, 1]), str(tmp_path / "pickled"), serialization_format="cloudpickle"
    )
    with pytest.raises(ValueError, match="not saved with skops"):
        load_model(str(tmp_path / "pickled"))
