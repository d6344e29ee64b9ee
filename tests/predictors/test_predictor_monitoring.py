"""Predictor-side monitoring: Prometheus metrics and shadow mode (in-process, real models)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from predictors.runtime.registry import predictor_class
from predictors.server import create_app
from predictors.settings import ServingSettings
from tests.helpers import save_trained_model

QUERY = "/api/v1/predict/lead_score?industry=Construction&value=5000000"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def challenger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_trained_model("lead_score", tmp_path_factory.mktemp("challenger") / "lead_score", seed=99, version="2")


def test_request_outcomes_validation_failures_and_scores_are_counted(model_dirs: dict[str, Path]) -> None:
    model = predictor_class("lead_score")(str(model_dirs["lead_score"]))
    with TestClient(create_app([model])) as c:
        before = c.get("/metrics").text
        assert c.get(QUERY).status_code == 200
        assert c.get("/api/v1/predict/lead_score?industry=Mining&value=5").status_code == 400
        after = c.get("/metrics").text
    labels = {"model": "lead_score", "version": "1", "protocol": "query"}
    for outcome in ("ok", "invalid_input"):
        grew = metric(after, "constructos_requests_total", **labels, outcome=outcome) - metric(
            before, "constructos_requests_total", **labels, outcome=outcome
        )
        assert grew == 1, outcome
    failures = "constructos_validation_failures_total"
    assert (
        metric(after, failures, model="lead_score", field="customer_industry")
        - metric(before, failures, model="lead_score", field="customer_industry")
        == 1
    )
    assert metric(after, "constructos_prediction_score_count", model="lead_score", role="champion") >= 1
    assert metric(after, "constructos_model_info", model="lead_score", version="1", role="champion") == 1


def test_shadow_scores_the_challenger_but_the_champion_answers(
    model_dirs: dict[str, Path], challenger_dir: Path
) -> None:
    settings = ServingSettings(shadow_uri_template=str(challenger_dir))
    shadowed = predictor_class("lead_score")(str(model_dirs["lead_score"]), settings=settings)
    plain = predictor_class("lead_score")(str(model_dirs["lead_score"]))
    challenger_only = predictor_class("lead_score")(str(challenger_dir))
    with TestClient(create_app([plain])) as c:
        champion_answer = c.get(QUERY).json()
    with TestClient(create_app([challenger_only])) as c:
        challenger_answer = c.get(QUERY).json()
    assert champion_answer["probability"] != challenger_answer["probability"]  # two different models
    with TestClient(create_app([shadowed])) as c:
        before = c.get("/metrics").text
        answer = c.get(QUERY).json()
        assert answer == champion_answer
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = c.get("/metrics").text
            if metric(
                after, "constructos_rows_scored_total", model="lead_score", role="challenger", version="2"
            ) > metric(before, "constructos_rows_scored_total", model="lead_score", role="challenger", version="2"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the shadow version was never scored")
    assert metric(after, "constructos_model_info", model="lead_score", version="2", role="challenger") == 1


def test_a_shadow_that_cannot_load_does_not_stop_serving(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = ServingSettings(shadow_uri_template=str(tmp_path / "missing"))
    model = predictor_class("lead_score")(str(model_dirs["lead_score"]), settings=settings)
    with TestClient(create_app([model])) as c:
        assert c.get(QUERY).status_code == 200
    assert model.shadow is None
