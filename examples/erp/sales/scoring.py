"""The lead score of an opportunity, from the platform, within the page's time budget.

One :class:`~constructos_client.Client` per process (its keep-alive connections and circuit
breaker are shared by the requests the process serves). When the model does not answer in time
the page shows "score unavailable" instead of waiting: the client's fallback.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from functools import cache

from constructos_client import CallEvent, Client, InvalidRow
from django.conf import settings

log = logging.getLogger(__name__)
MODEL = "lead_score"
#: lowest score of each grade, best first
GRADES = (("A", 75), ("B", 50), ("C", 25), ("D", 0))

calls: Counter[str] = Counter()  # outcomes of the calls so far (the metrics hook)
_lock = threading.Lock()


def count(event: CallEvent) -> None:
    with _lock:
        calls[event.outcome] += 1
        if event.fallback:
            calls["fallback"] += 1


@cache
def client() -> Client:
    return Client(settings.PREDICT_URL, timeout_s=settings.SALES_SCORE_BUDGET_S, retries=1, hooks=[count])


def grade(score: int) -> str:
    return next(letter for letter, low in GRADES if score >= low)


@dataclass(frozen=True)
class LeadScore:
    score: int | None  # 0-100; None: unavailable
    grade: str | None
    reason: str  # why it is unavailable ("" when it is there)
    circuit: str  # the circuit breaker's state after the call


def lead_score(features: dict[str, object]) -> LeadScore:
    scoring = client()
    try:
        answer = scoring.predict(MODEL, features, fallback={"score": None})
    except InvalidRow as exc:  # the ERP's data breaks the model's contract: a bug to fix, not an outage
        log.error("lead score refused for this opportunity: %s", exc.message)
        return LeadScore(None, None, f"invalid data: {exc.message}", scoring.breaker(MODEL).state)
    state = scoring.breaker(MODEL).state
    if answer.fallback:
        return LeadScore(None, None, type(answer.error).__name__, state)
    score = int(answer["score"])
    return LeadScore(score, grade(score), "", state)
