"""What each JSON document of the trigger's ledger store holds, as types.

Types only: the documents on disk are the same JSON as before, read without validation (a field
an older version wrote and these types do not name is kept as it is). They let mypy catch a
misspelt status or field where a document is written or compared (the modules that compare
statuses check with ``strict-equality``). No ``from __future__ import annotations`` here: it would
hide ``NotRequired`` from ``__required_keys__`` at run time.

Retraining keys (:mod:`~pipelines.streaming.retraining.state`) go ``pending`` → ``launched`` |
``failed``, or are ``skipped`` from the start. A launch (:mod:`~pipelines.streaming.retraining.launch`) is
``running`` while its lease is held, then ``finished`` (the local runner: the run has ended),
``launched`` (KFP or a dry run: submitted) or ``failed``.
"""

from typing import Literal, NotRequired, TypedDict

KeyStatus = Literal["pending", "launched", "failed", "skipped"]
LaunchStatus = Literal["running", "finished", "launched", "failed"]
Runner = Literal["local", "kfp", "dry-run"]


class KeyDetails(TypedDict, total=False):
    """What a key's document notes besides its status (merged in as the key moves on)."""

    reason: str  # new_rows, or the request's reason
    request_id: str
    new_rows: int
    landed_rows: int
    run_id: str  # once launched
    error: str  # once failed


class KeyDoc(KeyDetails):
    """``keys/<key>.json``: what became of a trigger key."""

    key: str
    model: str
    status: KeyStatus
    at: str  # last change, ISO-8601 UTC
    baseline: NotRequired[int]  # rows landed when the key was claimed: the model's next baseline


class ModelDoc(TypedDict):
    """``models/<model>.json``: the model's baseline and the keys still pending."""

    model: str
    rows: int
    pending: list[str]


class RequestDoc(TypedDict):
    """``requests/<model>-<reason digest>.json``: the last request without id taken for a reason."""

    model: str
    where: str  # topic-partition-offset
    at_ms: int  # its record time


class AttemptsDoc(TypedDict):
    """``attempts/<topic>/<partition>/<offset>.json``: failures to dead-letter a record."""

    failures: int


class PoisonDoc(TypedDict):
    """``poison/<topic>/<partition>/<offset>.json``: a record skipped, never dead-lettered."""

    topic: str
    partition: int
    offset: int
    error: str
    at: str


class LaunchOutcome(TypedDict, total=False):
    """What a launcher writes over its running record when the launch ends."""

    status: LaunchStatus
    run_id: str
    error: str


class LaunchDoc(TypedDict):
    """``launches/<key>.json``: a key's launch and its lease."""

    model: str
    key: str
    runner: Runner
    attempt: int  # 1, then one more per interrupted launch
    status: LaunchStatus
    started: float  # epoch seconds
    run_id: str  # empty until the run has an id
    holder: str  # host:pid:random of the lease holder
    lease_until: float  # epoch seconds; 0 once finished or handed back
    error: NotRequired[str]
