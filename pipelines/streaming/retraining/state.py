# mypy: strict-equality
"""The trigger's memory, shared by its replicas: JSON documents on the ledger store
(``Settings.ledger_uri``, a folder or ``s3://``), written by conditional create and compare-and-swap
(:mod:`pipelines.streaming.retraining.ledger`).

**Retraining.** ``keys/<key>.json``: what became of a trigger key (``pending`` → ``launched`` |
``failed``, or ``skipped``). A key is *claimed* before its launch by creating its document only if it
is absent, so of all the replicas exactly one launches it; it is settled (``pending`` → ``launched``
| ``failed``) by a compare-and-swap that succeeds only while it is still ``pending``, so it settles
once. ``models/<model>.json``: the model's baseline (rows landed when its last run was launched) and
the keys still pending, so a batch reads one small document, not every key ever claimed. A claim
writes the key first and the model's document second; a replica dying in between leaves a key the
model's document lacks, added by whoever claims that key again (the same rows, the same request
replayed). Pending keys are read back from their own documents, so a model document that still
names a settled key is harmless (and tidied up). A ``pending`` key whose launcher died is launched
again with the same key, which the launch ledger (:mod:`pipelines.streaming.retraining.launch`) uses to tell a
run in progress from an interrupted one.

**Retrain requests without an id.** ``requests/<model>-<reason digest>.json``: the last request
without ``request_id`` that was taken for a model and reason (its topic/partition/offset and
record time). Another within the cooldown of it counts as that one (:meth:`request_owner`), so it
claims the same key and launches nothing more.

**Records that could not be dead-lettered.** ``attempts/<topic>/<partition>/<offset>.json`` counts a
record's failed dead-letter attempts, ``poison/...`` keeps a record skipped after too many (its
topic, partition, offset and error). Both are on the ledger store, not on a replica's disk: a
poison record must never be lost with a pod, and a partition that moves to another replica keeps
its count (the counter is a compare-and-swap too; these are rare, small writes).

The documents' fields and statuses are typed in :mod:`pipelines.streaming.retraining.ledger_docs`.

A state file of older versions (``<data_dir>/trigger/state.sqlite3``) is not read: a fresh ledger
starts with no baselines, so the first run of each model comes after ``min_new_rows`` rows again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Set
from datetime import UTC, datetime
from typing import Unpack

from pipelines.storage import Store
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.ledger_docs import (
    AttemptsDoc,
    KeyDetails,
    KeyDoc,
    KeyStatus,
    ModelDoc,
    PoisonDoc,
    RequestDoc,
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key_doc(key: str) -> str:
    return f"keys/{ledger.safe_name(key)}.json"


def _model_doc(model: str) -> str:
    return f"models/{ledger.safe_name(model)}.json"


def _record_doc(kind: str, topic: str, partition: int, offset: int) -> str:
    return f"{kind}/{ledger.safe_name(topic)}/{partition}/{offset}.json"


class RetrainState:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- retraining ---------------------------------------------------------------------

    def rows_at_last_run(self, model: str) -> int:
        doc, _ = ledger.read_doc(self.store, _model_doc(model), ModelDoc)
        return int(doc["rows"]) if doc else 0

    def get(self, key: str) -> KeyDoc | None:
        return ledger.read_doc(self.store, _key_doc(key), KeyDoc)[0]

    def pending(self, model: str | None = None) -> list[tuple[str, KeyDoc]]:
        """Pending keys (of ``model``, or of every model), read from their own documents."""
        names = [_model_doc(model)] if model else self.store.list_keys("models", ".json")
        models = [doc for name in names if (doc := ledger.read_doc(self.store, name, ModelDoc)[0])]
        entries = [self.get(key) for doc in models for key in doc["pending"]]
        found = [(e["key"], e) for e in entries if e and e["status"] == "pending"]
        for doc in models:  # a settle whose replica died before updating the model's document
            if stale := set(doc["pending"]) - {k for k, _ in found}:
                self._index(doc["model"], drop=stale)
        return sorted(found)

    def claim(
        self, key: str, model: str, status: KeyStatus, *, rows: int | None = None, **details: Unpack[KeyDetails]
    ) -> bool:
        """Record ``key`` with ``status`` unless some replica recorded it before (then False);
        ``rows`` also moves the model's baseline."""
        entry = _entry(_new(key, model), status, rows, details)
        if self.store.put_if_absent(_key_doc(key), ledger.dumps(entry)):
            self._index(model, entry)
            return True
        if (existing := self.get(key)) is not None:  # its claimer may have died before indexing it
            self._index(model, existing)
        return False

    def record(
        self, key: str, model: str, status: KeyStatus, *, rows: int | None = None, **details: Unpack[KeyDetails]
    ) -> None:
        """Set a key's status (merging ``details``); ``rows`` also moves the model's baseline."""

        def recorded(cur: KeyDoc | None) -> KeyDoc:
            return _entry(cur or _new(key, model), status, rows, details)

        entry, _ = ledger.update_doc(self.store, _key_doc(key), recorded)
        assert entry is not None
        self._index(model, entry)

    def settle(self, key: str, status: KeyStatus, **details: Unpack[KeyDetails]) -> bool:
        """Move a ``pending`` key to ``status``; False if it was not pending (settled by another replica)."""

        def settled(cur: KeyDoc | None) -> KeyDoc | None:
            return _entry(cur, status, None, details) if cur and cur["status"] == "pending" else None

        entry, written = ledger.update_doc(self.store, _key_doc(key), settled)
        if written and entry is not None:
            self._index(entry["model"], entry)
        return written

    def _index(self, model: str, entry: KeyDoc | None = None, drop: Set[str] = frozenset()) -> None:
        """Bring the model's document in line with ``entry`` (idempotent: baselines only grow)."""

        def change(doc: ModelDoc | None) -> ModelDoc:
            doc = doc or {"model": model, "rows": 0, "pending": []}
            pending = set(doc["pending"]) - drop
            if entry is not None:
                if "baseline" in entry:
                    doc["rows"] = max(int(doc["rows"]), int(entry["baseline"]))
                pending = pending | {entry["key"]} if entry["status"] == "pending" else pending - {entry["key"]}
            return doc | {"pending": sorted(pending)}

        ledger.update_doc(self.store, _model_doc(model), change)

    def request_owner(self, model: str, reason: str, where: str, at_ms: int, cooldown_s: float) -> str:
        """The request (``where``) that a request without id at ``where`` (record time ``at_ms``)
        counts as: an earlier one for the same model and reason within ``cooldown_s``, or itself."""
        digest = hashlib.sha256(reason.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"requests/{ledger.safe_name(model)}-{digest}.json"

        def change(cur: RequestDoc | None) -> RequestDoc | None:
            if cur and (cur["where"] == where or abs(at_ms - int(cur["at_ms"])) < cooldown_s * 1000):
                return None
            return {"model": model, "where": where, "at_ms": at_ms}

        doc, _ = ledger.update_doc(self.store, name, change)
        assert doc is not None
        return str(doc["where"])

    # -- records that could not be dead-lettered ----------------------------------------

    def failed_attempt(self, topic: str, partition: int, offset: int) -> int:
        """Count one more failure to dead-letter a record; returns the failures so far."""
        name = _record_doc("attempts", topic, partition, offset)

        def counted(cur: AttemptsDoc | None) -> AttemptsDoc:
            return {"failures": int(cur.get("failures", 0) if cur else 0) + 1}

        doc, _ = ledger.update_doc(self.store, name, counted)
        assert doc is not None
        return int(doc["failures"])

    def poisoned(self, topic: str, partition: int, offset: int, error: str) -> None:
        record: PoisonDoc = {"topic": topic, "partition": partition, "offset": offset, "error": error, "at": _now()}
        self.store.put(_record_doc("poison", topic, partition, offset), ledger.dumps(record))

    def poison(self) -> list[PoisonDoc]:
        """Every record skipped because it could not be dead-lettered, oldest first."""
        found = self.store.read_many(self.store.list_keys("poison", ".json"))
        return sorted((json.loads(b) for b in found.values()), key=lambda r: (r["at"], r["offset"]))


def _new(key: str, model: str) -> KeyDoc:
    """A key's document before it has a status (:func:`_entry` gives it one)."""
    return {"key": key, "model": model, "status": "pending", "at": ""}


def _entry(base: KeyDoc, status: KeyStatus, rows: int | None, details: KeyDetails) -> KeyDoc:
    entry: KeyDoc = {**base, **details, "status": status, "at": _now()}
    return entry if rows is None else entry | {"baseline": rows}
