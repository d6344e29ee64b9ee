"""Canary analysis and the canary ladder: evidence in, decision out (pure; no I/O).

:func:`analyze` compares the challenger (canary or shadow) with the champion on what was
measured — error rate, p99 latency, how differently it scores the same traffic (PSI of the two
score distributions), live accuracy once enough labels arrived — and answers ``promote``,
``rollback`` or ``inconclusive`` with its reasons. A check that could not be measured (e.g.
latency from the inference log) is named and skipped. :func:`next_step` turns a verdict into the
ladder's next move (10 → 25 → 50 → 100 → promote), rolling back after ``failure_limit`` failed
checks. :mod:`pipelines.rollout.evidence` gathers the evidence (Prometheus or the inference log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from feature_specs.reference import bin_frequencies, quantile_edges
from feature_specs.spec import FeatureSpec
from pipelines.monitoring.drift import psi
from pipelines.monitoring.live_accuracy import live_metrics

Decision = Literal["promote", "rollback", "inconclusive"]
LADDER: tuple[int, ...] = (10, 25, 50, 100)


@dataclass(frozen=True)
class Side:
    """What was observed of one version over the analysis window (None: not measured)."""

    version: str | None
    rows: int = 0
    error_rate: float | None = None
    p99_s: float | None = None
    live: float | None = None
    """The spec's primary metric on labelled rows."""
    labels: int = 0


@dataclass(frozen=True)
class Evidence:
    champion: Side
    challenger: Side
    score_psi: float | None = None
    """PSI of the challenger's scores against the champion's, on the same traffic."""


@dataclass(frozen=True)
class Policy:
    min_rows: int = 100
    """Rows the challenger must have scored before anything is decided."""
    max_error_increase: float = 0.01
    """Challenger error rate above the champion's by more than this (absolute) fails."""
    max_latency_ratio: float = 1.5
    latency_slack_s: float = 0.005
    """p99 fails above ``ratio x champion + slack`` (the slack keeps sub-millisecond noise out)."""
    max_score_psi: float = 0.25
    """Scores this different from the champion's fail when no labels can judge who is right."""
    min_labels: int = 100
    """Labelled rows per side before live accuracy decides."""
    live_tolerance: float = 0.02
    """Relative slack of the live comparison: the larger of this and the spec's gate tolerance
    (live labels are fewer and noisier than the training holdout)."""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[str, ...]

    def lines(self) -> list[str]:
        return [f"decision: {self.decision}", *(f"  - {r}" for r in self.reasons)]


def score_psi(champion: Sequence[float], challenger: Sequence[float], bins: int = 10) -> float | None:
    """PSI of two score samples on the champion's quantile bins (the reference's binning)."""
    a, b = np.asarray(champion, dtype=np.float64), np.asarray(challenger, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return None
    edges = quantile_edges(a, bins)
    return psi(bin_frequencies(edges, a), bin_frequencies(edges, b))


def _worse(spec: FeatureSpec, challenger: float, champion: float, tolerance: float) -> bool:
    slack = tolerance * abs(champion)
    return challenger < champion - slack if spec.gate.greater_is_better else challenger > champion + slack


def analyze(spec: FeatureSpec, evidence: Evidence, policy: Policy = Policy()) -> Verdict:
    champion, challenger = evidence.champion, evidence.challenger
    if challenger.version is None or challenger.rows < policy.min_rows:
        rows = challenger.rows if challenger.version else 0
        return Verdict("inconclusive", (f"challenger scored {rows} rows; {policy.min_rows} needed",))
    failures: list[str] = []
    passes: list[str] = []

    def check(ok: bool, text: str) -> None:
        (passes if ok else failures).append(text)

    if challenger.error_rate is None or champion.error_rate is None:
        passes.append("error rate: not measured")
    else:
        check(
            challenger.error_rate <= champion.error_rate + policy.max_error_increase,
            f"error rate {challenger.error_rate:.2%} vs champion {champion.error_rate:.2%}",
        )
    if challenger.p99_s is None or champion.p99_s is None:
        passes.append("p99 latency: not measured")
    else:
        limit = champion.p99_s * policy.max_latency_ratio + policy.latency_slack_s
        check(
            challenger.p99_s <= limit,
            f"p99 {challenger.p99_s * 1000:.1f} ms vs champion {champion.p99_s * 1000:.1f} ms",
        )

    metric = spec.gate.primary_metric
    judged = (
        challenger.live is not None
        and champion.live is not None
        and min(challenger.labels, champion.labels) >= policy.min_labels
    )
    if judged:
        assert challenger.live is not None and champion.live is not None
        tolerance = max(spec.gate.tolerance, policy.live_tolerance)
        check(
            not _worse(spec, challenger.live, champion.live, tolerance),
            f"live {metric} {challenger.live:.4f} vs champion {champion.live:.4f} "
            f"({min(challenger.labels, champion.labels)} labels, tolerance {tolerance:.0%})",
        )
    else:
        passes.append(f"live {metric}: fewer than {policy.min_labels} labels per side")
    if evidence.score_psi is None:
        passes.append("score shift: not measured")
    elif judged:  # labels say who is right; a different score distribution is then no failure
        passes.append(f"score shift PSI {evidence.score_psi:.3f} (informational: live accuracy decides)")
    else:
        check(
            evidence.score_psi <= policy.max_score_psi,
            f"score shift PSI {evidence.score_psi:.3f} (max {policy.max_score_psi:g})",
        )

    if failures:
        return Verdict("rollback", tuple(f"FAIL {f}" for f in failures) + tuple(f"ok {p}" for p in passes))
    return Verdict("promote", tuple(f"ok {p}" for p in passes))


# --- the ladder ------------------------------------------------------------------------------


Action = Literal["step", "promote", "rollback", "hold"]


@dataclass(frozen=True)
class LadderStep:
    action: Action
    percent: int | None = None
    reason: str = ""


def next_step(
    percent: int | None, verdict: Verdict, failures: int, failure_limit: int, ladder: Sequence[int] = LADDER
) -> tuple[LadderStep, int]:
    """The ladder's move after one analysis, and the failure count to carry on with.

    ``percent`` is the canary's current share (None: no canary traffic, e.g. shadow only)."""
    if verdict.decision == "rollback":
        failures += 1
        if failures >= failure_limit:
            return LadderStep("rollback", None, f"{failures} failed check(s), limit {failure_limit}"), failures
        return LadderStep("hold", percent, f"failed check {failures} of {failure_limit}"), failures
    if verdict.decision == "inconclusive":
        return LadderStep("hold", percent, "inconclusive"), failures
    higher = [p for p in ladder if p > (percent or 0)]
    if not higher:
        return LadderStep("promote", None, f"healthy at {percent}%"), failures
    return LadderStep("step", higher[0], f"healthy at {percent or 0}%"), failures


def parse_ladder(text: str) -> tuple[int, ...]:
    """``"10,25,50,100"`` -> (10, 25, 50, 100), checked: increasing shares within 1..100."""
    steps = tuple(int(p) for p in text.split(",") if p.strip())
    if not steps or any(not 0 < p <= 100 for p in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"ladder {text!r}: increasing percentages within 1-100 expected")
    return steps


# --- evidence from inference-log records -----------------------------------------------------


def _last_version(records: Sequence[dict[str, Any]], role: str) -> str | None:
    found = [str(r.get("model_version")) for r in records if r.get("role") == role and r.get("model_version")]
    return found[-1] if found else None


def evidence_from_log(
    spec: FeatureSpec,
    records: Sequence[dict[str, Any]],
    outcomes: Sequence[dict[str, Any]],
    champion: str | None = None,
    challenger: str | None = None,
) -> Evidence:
    """Evidence from inference-log records (canary or shadow) and outcome events of one model.

    Versions default to the last champion / challenger seen in the log. Rows are matched by
    version, so a canary pod logging itself as ``champion`` still counts for its version."""
    records = [r for r in records if r.get("model") == spec.name]
    champion = champion or _last_version(records, "champion")
    challenger = challenger or _last_version(records, "challenger")
    truth = {(o.get("request_id"), o.get("row", 0)): o.get("actual") for o in outcomes if o.get("model") == spec.name}
    output = spec.outputs[0][0]

    def side(version: str | None) -> tuple[Side, list[float]]:
        scores: list[float] = []
        labelled: list[tuple[float, float]] = []
        for r in records:
            if version is None or str(r.get("model_version")) != version:
                continue
            for row, score in enumerate((r.get("outputs") or {}).get(output) or []):
                scores.append(float(score))
                actual = truth.get((r.get("request_id"), row))
                if actual is not None:
                    labelled.append((float(score), float(actual)))
        pairs = np.array(labelled, dtype=np.float64).reshape(-1, 2)
        live = live_metrics(spec, pairs[:, 1], pairs[:, 0]).get(spec.gate.primary_metric)
        return Side(version, len(scores), live=live, labels=len(labelled)), scores

    (ours, our_scores), (theirs, their_scores) = side(champion), side(challenger)
    return Evidence(ours, theirs, score_psi(our_scores, their_scores))
