"""What users look at: the model card, the ROC points and confusion matrix the KFP UI draws, and
self-contained HTML pages (plots, Data Docs) — as plain functions on real fitted models and a real
great-expectations site."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from feature_specs import limits, load_spec
from feature_specs.spec import FeatureSpec
from feature_specs.synthetic import generate
from feature_specs.transform import build_model
from pipelines.demo import landing_frame
from pipelines.training.steps import card, deploy, quality, ui
from pipelines.training.steps.evaluate import gate, plots
from pipelines.training.steps.train import labels, model_input, scores, split

#: anything that makes a page fetch from elsewhere
EXTERNAL = re.compile(r"""(?:src|href)=["']?(?:https?:)?//|url\(\s*['"]?(?:https?:)?//|<script\b""", re.IGNORECASE)


def fitted(model: str, rows: int = 2500) -> tuple[FeatureSpec, pd.DataFrame, dict[str, np.ndarray], np.ndarray, object]:
    """A landed snapshot, a quickly fitted model and every scorer on its holdout rows."""
    spec = load_spec(model)
    data = generate(model, rows, seed=5)
    frame = landing_frame(spec, data.frame, seed=5)
    frame["best"] = limits.best_achievable(model, data.frame)
    train_rows, holdout = split(spec, frame, 0.2, seed=0)
    x, y = model_input(spec, train_rows), labels(spec, train_rows)
    fitted_model = build_model(spec, max_iter=30).fit(x, y)
    default = build_model(spec).fit(x, y)
    hx = model_input(spec, holdout)
    scored = {"model": scores(spec, fitted_model, hx), "baseline": scores(spec, default, hx)}
    scored["best"] = holdout["best"].to_numpy(dtype=np.float64)
    return spec, frame.drop(columns="best"), scored, labels(spec, holdout), fitted_model


def a_card(model: str, training: card.Training) -> tuple[str, quality.QualityReport, list[str]]:
    spec, frame, scored, y, _ = fitted(model)
    report = quality.bootstrap(spec, y, scored, resamples=200, seed=0)
    candidate = {name: iv.value for name, iv in report.metrics["model"].items()}
    result = gate(spec, candidate, None, {"baseline": report.metrics["baseline"][spec.gate.primary_metric].value})
    if training.defaults_note:
        result.reasons.append(training.defaults_note)
    data = card.DataVersion.of(frame, "ab" * 32, "s3://artifacts/snapshots/x.parquet", 2000, len(y))
    text = card.model_card(spec, data, report, result.passed, result.reasons, training, mlflow_run_id="run1")
    return text, report, result.reasons


def test_roc_points_are_thinned_finite_and_keep_both_ends() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    score = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)
    fpr, tpr, thresholds = ui.roc_points(y, score)
    assert len(fpr) == len(tpr) == len(thresholds) <= ui.ROC_POINTS
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert all(np.isfinite(thresholds)) and thresholds == sorted(thresholds, reverse=True)
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y, score), abs=0.005)


def test_confusion_matrix_rows_are_actual_columns_predicted() -> None:
    y = np.array([False, False, True, True, True])
    score = np.array([0.1, 0.7, 0.2, 0.6, 0.9])
    assert ui.confusion(y, score, 0.5) == [[1, 1], [1, 2]]  # TN FP / FN TP
    assert ui.confusion(y, score, 0.65) == [[1, 1], [2, 1]]


def test_plot_page_is_self_contained() -> None:
    spec, _, scored, y, model = fitted("credit_risk", 1500)
    _, holdout = split(spec, landing_frame(spec, generate("credit_risk", 1500, seed=5).frame, seed=5), 0.2, seed=0)
    images = plots(spec, model, model_input(spec, holdout), y, scored["model"])
    page = ui.page("credit_risk <evaluation>", images, ["roc_auc 0.8 [0.7, 0.9]"])
    assert page.count("data:image/png;base64,") == len(images) == 3
    assert "&lt;evaluation&gt;" in page and not EXTERNAL.search(page)


@pytest.mark.integration
def test_data_docs_page_is_the_validation_page_without_anything_external(tmp_path: Path) -> None:
    from pipelines.training.steps.validate import validate

    spec = load_spec("credit_risk")
    frame = landing_frame(spec, generate("credit_risk", 800, seed=2).frame, seed=2)
    validate(spec, frame, tmp_path / "result.json", tmp_path / "site")
    original = next((tmp_path / "site" / "validations").rglob("*.html")).read_text()
    assert EXTERNAL.search(original)  # great expectations' own page pulls CSS and scripts from CDNs
    page = ui.data_docs_page(tmp_path / "site")
    assert not EXTERNAL.search(page)
    assert "Evaluated Expectations" in page and "avg_days_to_pay" in page  # the content stays
    assert "<style>" in page


@pytest.mark.parametrize("model", ["credit_risk", "lead_score", "stock_demand"])
def test_card_holds_prediction_data_contract_quality_gate_and_limits(model: str) -> None:
    spec = load_spec(model)
    training = card.Training(
        tuning="searched: 3 of 3 trials complete, best trial 2",
        params={"learning_rate": "0.1"},
        calibration="isotonic" if spec.is_classifier else "none",
        calibration_brier={"none": 0.151, "isotonic": 0.149} if spec.is_classifier else {},
    )
    text, report, reasons = a_card(model, training)
    assert text.startswith(f"# {model}: model card")
    assert f"`{spec.target.name}`" in text and spec.target.description in text
    assert "ab" * 32 in text and "s3://artifacts/snapshots/x.parquet" in text and "2,500 rows" in text
    assert re.search(r"events from 20\d\d-\d\d-\d\dT.* to 20\d\d-", text)  # the data's time range
    for feature in spec.features:
        assert f"| `{feature.name}` | {feature.dtype} |" in text
    primary = report.metrics["model"][spec.gate.primary_metric]
    assert f"| this model | {primary.value:.4f} [{primary.low:.4f}, {primary.high:.4f}] |" in text
    best = report.gaps["best"]
    assert "| best achievable | " in text and f"{best.value:+.2f}% [{best.low:+.2f}, {best.high:+.2f}]" in text
    assert "| untuned baseline | " in text
    assert all(f"- {reason}" in text for reason in reasons) and "## Gate: " in text
    assert ("## Calibration" in text) == spec.is_classifier
    if spec.is_classifier:
        assert "**isotonic**" in text and "isotonic 0.14900" in text
    assert "## Known limits" in text and "the figures do not measure how the model ages" in text
    assert "NOT TUNED" not in text
    assert len(text) <= deploy.DESCRIPTION_LIMIT  # the whole card fits a registered version's description


def test_card_says_loudly_when_the_model_trained_on_defaults() -> None:
    from pipelines.training.steps import tune

    note = tune.defaults_note({"tuning": "defaults: 0 of 1 trials completed within the search budget"})
    text, _, reasons = a_card("credit_risk", card.Training(tuning="defaults: ...", defaults_note=note))
    assert note and note in reasons
    assert text.count(note) == 2  # in the gate's reasons and first among the known limits
    assert text.index(note, text.index("## Known limits")) < text.index("Trained and scored on rows")


def test_a_card_too_long_for_a_description_is_cut_at_a_line_with_a_pointer() -> None:
    long = "\n".join(f"line {i} " + "x" * 90 for i in range(100))
    cut = deploy.fit_description(long, "run9")
    assert len(cut) <= deploy.DESCRIPTION_LIMIT and cut.endswith("model_card.md of MLflow run run9)\n")
    assert long.startswith(cut.split("\n\n(cut")[0]) and cut.split("\n\n(cut")[0].endswith("x" * 90)
    assert deploy.fit_description("short card", "run9") == "short card"
