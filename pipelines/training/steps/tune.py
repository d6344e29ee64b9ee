"""tune: search the spec's hyperparameter space with cross-validation on the training split only.

The holdout (the same split train and evaluate use) is never touched. Optuna's TPE sampler, seeded,
proposes trials; the spec's own defaults are the first trial, so the search never returns
something worse than them on cross-validation; a trial whose first folds already trail the
median of the others is pruned. Every trial is an MLflow child run of the pipeline's run, which
this step opens (train and evaluate log into the same run).

The time budget never leaves the search empty: the first ``MIN_COMPLETE_TRIALS`` trials (the
spec's defaults first) run to completion whatever the clock says, so a loaded machine extends the
budget instead of silently training on the defaults. When the model trains on the spec's values
anyway (no search space, a budget of 0 trials), the run's ``tuning`` tag says so and
:func:`defaults_note` turns it into a line of the gate's reasons and of the model card.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from feature_specs.spec import FeatureSpec, Search, SearchRange
from feature_specs.transform import build_model, inner_estimator
from pipelines.training import mlflow_store
from pipelines.training.steps.metrics import compute_metrics
from pipelines.training.steps.train import labels, model_input, scores, split

log = logging.getLogger(__name__)

#: trials that always complete, past the time budget if need be (capped by the spec's trial count)
MIN_COMPLETE_TRIALS = 3


@dataclass
class TuneResult:
    mlflow_run_id: str
    params: dict[str, Any] = field(default_factory=dict)  # the best trial's values ({} without a search)
    seconds: float = 0.0
    trials: int = 0
    best_cv: float | None = None
    default_cv: float | None = None
    complete: int = 0
    extended_s: float = 0.0  # how far past the time budget the guaranteed trials ran


def defaults_note(tags: dict[str, str]) -> str | None:
    """A loud line when the run's model trained on the spec's default parameters without a
    search behind them (from the run's ``tuning`` tag), else None."""
    tuning = tags.get("tuning", "")
    if tuning.startswith("none"):
        why = tuning.partition(": ")[2]
        return f"NOT TUNED: trained on the spec's default parameters (and any given to the run): {why}"
    if tuning.startswith("defaults"):
        return f"NOT TUNED: trained on the spec's default parameters: {tuning.partition(': ')[2]}"
    return None


def suggest(trial: Any, name: str, space: SearchRange) -> Any:
    if space.choices is not None:
        return trial.suggest_categorical(name, list(space.choices))
    low, high = float(space.low or 0), float(space.high or 0)
    if space.integer:
        return trial.suggest_int(name, int(low), int(high), log=space.log)
    return trial.suggest_float(name, low, high, log=space.log)


def _in_space(value: Any, space: SearchRange) -> bool:
    if space.choices is not None:
        return value in space.choices
    return isinstance(value, int | float) and float(space.low or 0) <= value <= float(space.high or 0)


def search_rows(spec: FeatureSpec, train_rows: pd.DataFrame, search: Search, seed: int) -> pd.DataFrame:
    """At most ``search.max_rows`` training rows (stratified for classifiers), reproducibly."""
    if len(train_rows) <= search.max_rows:
        return train_rows
    stratify = labels(spec, train_rows) if spec.is_classifier else None
    sample, _ = train_test_split(train_rows, train_size=search.max_rows, random_state=seed, stratify=stratify)
    return sample.reset_index(drop=True)


def cross_validated(
    spec: FeatureSpec,
    params: dict[str, Any],
    x: pd.DataFrame,
    y: np.ndarray,
    folds: list[Any],
    trial: Any = None,
    deadline: float = float("inf"),
    durations: list[float] | None = None,
) -> list[float]:
    """The gate's primary metric per fold; reports to ``trial`` after each fold so it can be pruned.
    A fold that would end past ``deadline`` (``time.monotonic()``, judged by the longest fold in
    ``durations`` so far, which this appends to) is not started: the trial is pruned and the study
    stopped, so the search keeps its time budget."""
    import optuna

    values: list[float] = []
    durations = [] if durations is None else durations
    for step, (fit_idx, val_idx) in enumerate(folds):
        expected = max(durations, default=0.0)
        if trial is not None and time.monotonic() + expected > deadline:
            trial.study.stop()
            raise optuna.TrialPruned("time budget spent")
        began = time.monotonic()
        model = build_model(spec, **params).fit(x.iloc[fit_idx], y[fit_idx])
        metrics = compute_metrics(spec, y[val_idx], scores(spec, model, x.iloc[val_idx]))
        values.append(metrics[spec.gate.primary_metric])
        durations.append(time.monotonic() - began)
        if trial is not None:
            trial.report(float(np.mean(values)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return values


def tune(
    spec: FeatureSpec,
    frame: pd.DataFrame,
    *,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    run_name: str = "",
    tags: dict[str, str] | None = None,
    trials: int = -1,
    timeout_s: float = -1.0,
    started: float | None = None,
) -> TuneResult:
    """Open the pipeline's MLflow run and, if the spec declares a search space, search it.
    ``trials`` / ``timeout_s`` override the spec's budget when >= 0 / > 0; 0 trials: no search.
    The time budget counts from ``started`` (``time.monotonic()``; default: now): the tune step
    passes its own start, so reading the rows and opening the MLflow run are inside the budget."""
    import mlflow

    started = time.monotonic() if started is None else started

    mlflow_store.configure()
    with (
        mlflow_store.active_experiment(spec.name) as experiment,
        mlflow.start_run(experiment_id=experiment, run_name=run_name or None, tags=tags or {}) as run,
    ):
        search = spec.estimator.search
        if search is None or trials == 0:
            why = "the spec declares no search space" if search is None else "a budget of 0 trials"
            mlflow.set_tag("tuning", f"none: {why}")
            log.info("tune: no search (%s); training with the spec's parameters", why)
            return TuneResult(run.info.run_id)
        budget = {"trials": trials} if trials > 0 else {}
        search = search.model_copy(update=budget | ({"timeout_s": timeout_s} if timeout_s > 0 else {}))
        return _search(spec, search, frame, holdout_fraction, seed, run.info.run_id, started + search.timeout_s)


def _search(
    spec: FeatureSpec,
    search: Search,
    frame: pd.DataFrame,
    holdout_fraction: float,
    seed: int,
    run_id: str,
    deadline: float,
) -> TuneResult:
    import mlflow
    import optuna

    started = time.perf_counter()
    durations: list[float] = []
    train_rows, _ = split(spec, frame, holdout_fraction, seed)  # the holdout stays untouched
    rows = search_rows(spec, train_rows, search, seed)
    x, y = model_input(spec, rows), labels(spec, rows)
    splitter = StratifiedKFold if spec.is_classifier else KFold
    folds = list(splitter(n_splits=search.folds, shuffle=True, random_state=seed).split(x, y))
    metric = spec.gate.primary_metric

    guaranteed = min(MIN_COMPLETE_TRIALS, search.trials)

    def completed(study: optuna.Study) -> int:
        return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, space) for name, space in search.params.items()}
        began = time.perf_counter()
        # a guaranteed trial ignores the clock (the median pruner waits for as many trials)
        until = float("inf") if completed(trial.study) < guaranteed else deadline
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(params)
            try:
                values = cross_validated(spec, params, x, y, folds, trial, until, durations)
            except optuna.TrialPruned:
                mlflow.set_tag("trial_state", "pruned")
                raise
            finally:
                mlflow.log_metric("seconds", time.perf_counter() - began)
            mlflow.log_metrics({f"cv_{metric}": float(np.mean(values)), f"cv_{metric}_std": float(np.std(values))})
            mlflow.set_tag("trial_state", "complete")
        return float(np.mean(values))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if spec.gate.greater_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, search.trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=max(3, guaranteed), n_warmup_steps=0),
    )
    current = inner_estimator(build_model(spec).named_steps["model"]).get_params()  # the spec's, else sklearn's
    defaults = {k: current[k] for k in search.params if k in current and _in_space(current[k], search.params[k])}
    if defaults:
        study.enqueue_trial(defaults, skip_if_exists=True)
    remaining = max(deadline - time.monotonic(), 0.001)  # spent: the first fold is not started
    study.optimize(objective, n_trials=search.trials, timeout=remaining, gc_after_trial=False)
    while completed(study) < guaranteed and len(study.trials) < search.trials:  # the budget ran out first
        study.optimize(objective, n_trials=1, gc_after_trial=False)

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    seconds = time.perf_counter() - started
    default_cv = complete[0].value if defaults and complete and complete[0].number == 0 else None
    result = TuneResult(run_id, dict(study.best_params) if complete else {}, seconds, len(study.trials))
    result.best_cv = study.best_value if complete else None
    result.default_cv = default_cv
    result.complete = len(complete)
    result.extended_s = max(time.monotonic() - deadline, 0.0)
    if complete:
        number = study.best_trial.number
        best = "the spec's defaults" if number == 0 and defaults else f"trial {number}"
        state = f"searched: {len(complete)} of {len(study.trials)} trials complete, best {best}"
    else:
        state = f"defaults: 0 of {len(study.trials)} trials completed within the search budget"
    if result.extended_s > 0 and len(complete) <= guaranteed:
        state += f"; budget of {search.timeout_s:g} s extended by {result.extended_s:.1f} s for {guaranteed} trials"
    mlflow.set_tag("tuning", state)
    mlflow.log_params(
        {
            "search.space": json.dumps({k: v.model_dump(exclude_defaults=True) for k, v in search.params.items()}),
            "search.trials": search.trials,
            "search.timeout_s": search.timeout_s,
            "search.folds": search.folds,
            "search.rows": len(rows),
        }
    )
    summary = {
        "tune_seconds": seconds,
        "tune_trials": len(study.trials),
        "tune_trials_complete": len(complete),
        "tune_budget_extended_s": result.extended_s,
    }
    if result.best_cv is not None:
        summary[f"tune_best_cv_{metric}"] = result.best_cv
    if default_cv is not None:
        summary[f"tune_default_cv_{metric}"] = default_cv
    mlflow.log_metrics(summary)
    mlflow.set_tag("tuned_params", json.dumps(result.params))
    log.info(
        "tune: %s trials (%s complete) in %.1f s on %s rows; best cv %s %s (spec defaults %s): %s",
        len(study.trials),
        len(complete),
        seconds,
        f"{len(rows):,}",
        metric,
        f"{result.best_cv:.4f}" if result.best_cv is not None else "-",
        f"{default_cv:.4f}" if default_cv is not None else "-",
        result.params,
    )
    return result
