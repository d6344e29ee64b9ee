"""ONNX for every model, checked honestly: double-precision trees, probes from the spec and the
training reference (never a model's synthetic generator), the runtime in use visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from feature_specs import load_spec
from predictors.runtime.loading import load_model
from predictors.runtime.probes import probe_columns, split_thresholds
from predictors.runtime.registry import predictor_class
from predictors.runtime.scoring import ATOL, RTOL, FittedTransform, Scorer
from predictors.server import create_app


def _sklearn(spec_name: str, pipeline: object, columns: dict[str, np.ndarray]) -> np.ndarray:
    frame = pd.DataFrame(columns)
    spec = load_spec(spec_name)
    return pipeline.predict_proba(frame)[:, 1] if spec.is_classifier else pipeline.predict(frame)  # type: ignore[attr-defined]


def test_every_model_is_served_by_onnx_and_says_so(model_dirs: dict[str, Path], spec_name: str) -> None:
    model = predictor_class(spec_name)(str(model_dirs[spec_name]))
    with TestClient(create_app([model])) as client:
        parameters = client.get(f"/v2/models/{spec_name}").json()["parameters"]
        metrics = client.get("/metrics").text
    assert parameters["runtime"] == "onnxruntime", parameters
    assert "probes agree with scikit-learn within rtol 1e-09, atol 1e-09" in parameters["runtime_check"]
    assert f'constructos_model_info{{model="{spec_name}",role="champion",runtime="onnxruntime"' in metrics


def test_onnx_equals_sklearn_on_and_next_to_every_split_threshold(model_dirs: dict[str, Path], spec_name: str) -> None:
    loaded = load_model(str(model_dirs[spec_name]))
    assert loaded.reference is not None  # the probes use the training quantiles
    scorer = Scorer(load_spec(spec_name), loaded.pipeline, reference=loaded.reference)
    probe = probe_columns(scorer.spec, loaded.reference, split_thresholds(loaded.pipeline[-1]))
    assert len(next(iter(probe.values()))) > 500
    np.testing.assert_allclose(scorer(probe), _sklearn(spec_name, loaded.pipeline, probe), rtol=RTOL, atol=ATOL)


def test_the_probes_catch_a_float32_conversion(model_dirs: dict[str, Path]) -> None:
    """skl2onnx's float32 trees (what was served before) part ways with sklearn on off-grid
    values; the probes must see it, so such a conversion would never be switched on."""
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    loaded = load_model(str(model_dirs["credit_risk"]))
    spec = load_spec("credit_risk")
    transform = FittedTransform(spec, loaded.pipeline[0])
    float32 = convert_sklearn(
        loaded.pipeline[-1],
        initial_types=[("X", FloatTensorType([None, transform.width]))],
        options={id(loaded.pipeline[-1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(float32.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = probe_columns(spec, loaded.reference, split_thresholds(loaded.pipeline[-1]))
    old = session.run(["probabilities"], {"X": transform(probe).astype(np.float32)})[0][:, 1]
    exact = _sklearn("credit_risk", loaded.pipeline, probe)
    off = np.abs(old - exact) > ATOL + RTOL * np.abs(exact)
    assert off.sum() > 10 and np.abs(old - exact).max() > 1e-3


def test_probes_come_from_the_spec_alone_when_there_is_no_reference() -> None:
    spec = load_spec("lead_score")
    probe = probe_columns(spec)
    industries = set(probe["customer_industry"])
    assert set(spec.feature("customer_industry").categories or ()) <= industries
    values = probe["opportunity_value"]
    assert values.min() == 0 and values.max() == 1e10  # the spec's bounds
    assert np.isnan(probe["days_since_first_contact"]).any()  # a missing optional: median imputed
    assert set(probe["lead_source"]) >= {"unknown", "referral"}


def test_a_model_onnx_cannot_reproduce_is_served_by_sklearn_and_says_why(model_dirs: dict[str, Path]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    loaded = load_model(str(model_dirs["lead_score"]))
    spec = load_spec("lead_score")
    columns = probe_columns(spec, random_rows=200)
    y = np.arange(len(columns["customer_industry"])) % 2
    linear = Pipeline([("transform", loaded.pipeline[0]), ("model", LogisticRegression(max_iter=200))])
    linear.fit(pd.DataFrame(columns), y)
    scorer = Scorer(spec, linear)
    assert scorer.runtime == "sklearn"
    assert scorer.check.startswith("ONNX unavailable (ValueError: LogisticRegression has no double-precision")


@pytest.mark.parametrize("keep", ["numeric", "category"])
def test_a_spec_with_one_kind_of_feature_gets_onnx_too(
    keep: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part of the shared transform with no columns is never fitted; the fast path copes."""
    import yaml

    from feature_specs import Validator
    from feature_specs.transform import build_model
    from tests.spec_data import spec_rows

    raw = yaml.safe_load(Path("feature_specs/lead_score.yaml").read_text())
    raw["features"] = [f for f in raw["features"] if (f["dtype"] == "category") == (keep == "category")]
    for f in raw["features"]:
        f.pop("monotone", None)
    raw |= {"name": "one_kind", "source_topic": "test.one-kind", "outcome_topic": "test.one-kind-outcomes"}
    (tmp_path / "one_kind.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CONSTRUCTOS_SPEC_PATH", str(tmp_path))
    spec = load_spec("one_kind")
    data = spec_rows(spec, 2000, seed=3)
    pipeline = build_model(spec).fit(Validator(spec, 2000).frame(data[spec.feature_names]), data[spec.target.name])
    scorer = Scorer(spec, pipeline)
    assert scorer.runtime == "onnxruntime", scorer.check


def test_a_forecast_relative_to_a_derived_feature_adds_it_inside_the_onnx_graph(model_dirs: dict[str, Path]) -> None:
    """stock_demand's trees fit log1p(units) minus the lags' log mean (``estimator.offset``): ONNX
    gathers that transformed column and adds it before expm1, as scikit-learn does."""
    from onnx import numpy_helper

    from feature_specs.transform import offset_column
    from predictors.runtime.scoring import _estimator_to_onnx

    spec = load_spec("stock_demand")
    loaded = load_model(str(model_dirs["stock_demand"]))
    transform = FittedTransform(spec, loaded.pipeline[0])
    assert [log1p for _, _, log1p in transform.means] == [d.log1p for d in spec.derived] == [False, True]
    graph = _estimator_to_onnx(spec, loaded.pipeline[-1], transform.width).graph
    (gather,) = [node for node in graph.node if node.op_type == "Gather"]
    (column,) = [t for t in graph.initializer if t.name == gather.input[1]]
    assert numpy_helper.to_array(column).tolist() == [offset_column(spec)] == [transform.width - 1]
