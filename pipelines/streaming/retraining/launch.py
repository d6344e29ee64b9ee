# mypy: strict-equality
"""Start a training run from code (the Kafka trigger calls this): kfp.local or a KFP endpoint,
chosen by ``settings.pipeline_runner``.

Each key has a ledger document ``launches/<key>.json`` on the ledger store (``Settings.ledger_uri``,
a folder or ``s3://``, shared by every replica). A key that launched returns its run id again; a
key that failed raises again (the caller decides whether a new key retries); a key whose launch is
running elsewhere raises :class:`LaunchInProgress`; a key whose launcher died mid-launch is launched
again (``attempt`` counts), loudly.

**The lease.** A launcher takes a key by writing ``{"status": "running", "holder": <host:pid:id>,
"lease_until": now + launch_lease_s}`` with a conditional create (or, over an earlier attempt, a
compare-and-swap), and a heartbeat thread renews the lease every third of it while the run runs.
Another launcher that finds a live lease gets :class:`LaunchInProgress`; one that finds it expired
(its holder died without a word) takes the key over by compare-and-swap, so of several taking it
over at once exactly one wins. A holder whose renewal fails because someone took over logs an
ERROR: the key may then run twice (a holder stalled longer than the lease). Leases compare wall
clocks: the lease must be much longer than the clock skew between pods.

**Handing back.** A trigger that stops while a launch runs (SIGTERM) does not wait for it:
:func:`release_leases` ends every lease this process holds (``lease_until`` 0, no run id), so the
key's next launcher takes it over at once as an interrupted attempt instead of after the lease.

The document is :class:`~pipelines.streaming.retraining.ledger_docs.LaunchDoc`. Its final status depends on
the runner: ``finished`` for ``local`` (the run ran in this process and has ended), ``launched``
for ``kfp`` and ``dry-run`` (submitted), ``failed`` for any runner; ledgers written so stay readable.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from pipelines.settings import get_settings
from pipelines.storage import Store, StoreUnavailable
from pipelines.streaming.retraining import ledger
from pipelines.streaming.retraining.ledger_docs import LaunchDoc, LaunchOutcome, LaunchStatus

log = logging.getLogger(__name__)


def ledger_key(key: str) -> str:
    return f"launches/{ledger.safe_name(key)}.json"


class LaunchInProgress(RuntimeError):
    """The key's launch is running in another process (or thread) right now, for ``retry_in`` s more at least."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


_held: set[Lease] = set()  # the leases this process holds now
_held_lock = threading.Lock()


def release_leases() -> list[str]:
    """Hand back every lease this process holds (the runs are abandoned); returns their keys."""
    with _held_lock:
        leases = list(_held)
    return [lease.record["key"] for lease in leases if lease.release()]


class Lease:
    """The key's ledger document while this process launches it, renewed by a heartbeat thread."""

    def __init__(self, store: Store, key: str, record: LaunchDoc, ttl: float) -> None:
        self.store, self.name, self.record, self.ttl = store, ledger_key(key), record, ttl
        self.tag: str | None = None
        self.lost = False
        self.released = False  # handed back at stop (:func:`release_leases`)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{key}", daemon=True)

    def take(self, previous_tag: str | None) -> bool:
        """Write the running record over ``previous_tag`` (None: create); False if another was faster."""
        if not ledger.write_doc(self.store, self.name, self._renewed(), previous_tag):
            return False
        self.tag = ledger.read_doc(self.store, self.name)[1]
        with _held_lock:
            _held.add(self)
        self._thread.start()
        return True

    def release(self) -> bool:
        """Stop renewing and mark the key free (``lease_until`` 0); False if it was not ours any more."""
        self._stop.set()
        with _held_lock:
            _held.discard(self)
        try:
            released = not self.lost and self._swap(self.record | {"lease_until": 0.0})
        except StoreUnavailable as exc:
            log.warning("launch %s: lease not handed back (%s): it expires by itself", self.record["key"], exc)
            return False
        self.lost = self.released = True  # the abandoned run's outcome is no longer this process's to write
        return released

    def finish(self, changes: LaunchOutcome) -> None:
        """Stop renewing and write the outcome, unless someone took the key over meanwhile."""
        self._stop.set()
        self._thread.join()
        with _held_lock:
            _held.discard(self)
        if self.released:
            log.info("launch %s: handed back at stop; its outcome %s is not recorded", self.record["key"], changes)
            return
        for pause in (1, 2, 4, 8, 0):  # the store may be away for a moment: the run did happen
            try:
                if not self.lost and self._swap({**self.record, **changes, "lease_until": 0.0}):
                    return
                break
            except StoreUnavailable:
                if not pause:
                    raise
                time.sleep(pause)
        log.error("launch %s: lease lost; its outcome %s is not recorded", self.record["key"], changes)

    def _renewed(self) -> LaunchDoc:
        return self.record | {"lease_until": time.time() + self.ttl}

    def _swap(self, record: LaunchDoc) -> bool:
        """Replace our version of the document; False if it is no longer ours. A version we do not
        know but still hold is our own earlier write whose answer was lost: written over once more."""
        if self.tag is None or not ledger.write_doc(self.store, self.name, record, self.tag):
            current, self.tag = ledger.read_doc(self.store, self.name, LaunchDoc)
            if not self._ours(current) or not ledger.write_doc(self.store, self.name, record, self.tag):
                return False
        current, self.tag = ledger.read_doc(self.store, self.name, LaunchDoc)
        return self._ours(current)

    def _ours(self, current: LaunchDoc | None) -> bool:
        return current is not None and current.get("holder") == self.record["holder"]

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._swap(self._renewed()):
                    self.lost = True
                    log.error("launch %s: lease lost, another launcher took the key over", self.record["key"])
                    return
            except StoreUnavailable as exc:  # tried again at the next beat, until the lease runs out
                log.warning("launch %s: lease not renewed: %s", self.record["key"], exc)


def launch_training(model: str, *, key: str, **params: Any) -> str:
    """Run (locally) or submit (KFP) the training pipeline for ``model`` once per ``key``.

    Returns the run's id (never empty): the pipeline run name locally, the KFP run id on a cluster.
    """
    settings = get_settings()
    store = settings.ledger_store
    while True:
        previous, tag = ledger.read_doc(store, ledger_key(key), LaunchDoc)
        if previous and previous.get("run_id"):
            log.info("launch: key %s already launched: run %s", key, previous["run_id"])
            return str(previous["run_id"])
        if previous and previous.get("status") == "failed":
            raise RuntimeError(f"launch {key} failed before: {previous.get('error', '')[:500]}")
        if previous and (left := float(previous.get("lease_until", 0)) - time.time()) > 0:
            raise LaunchInProgress(f"launch {key} is running in {previous.get('holder')}", retry_in=left)
        attempt = int(previous.get("attempt", 0)) + 1 if previous else 1
        record: LaunchDoc = {
            "model": model,
            "key": key,
            "runner": settings.pipeline_runner,
            "attempt": attempt,
            "status": "running",
            "started": time.time(),
            "run_id": "",
            "holder": _holder(),
            "lease_until": 0.0,  # every write sets it: the lease's end, or 0 once over
        }
        lease = Lease(store, key, record, settings.launch_lease_s)
        if lease.take(tag):
            break
    if previous:
        log.warning("launch: key %s was interrupted (attempt %d died): launching it again", key, attempt - 1)
    return _launch(lease, model, key, params)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _launch(lease: Lease, model: str, key: str, params: dict[str, Any]) -> str:
    settings = get_settings()
    try:
        if settings.pipeline_runner == "dry-run":
            run_id = f"dry-run-{key}"
        elif settings.pipeline_runner == "kfp":
            from pipelines.training.submit import submit

            run_id = submit(model, key=key, **params)
        else:
            from pipelines.training.run import run_local

            run_id = run_local(model, **params).pipeline_run_id
        if not run_id:
            raise RuntimeError("the runner returned no run id")
    except Exception as exc:
        lease.finish({"status": "failed", "error": str(exc)[:2000]})
        raise
    status: LaunchStatus = "finished" if settings.pipeline_runner == "local" else "launched"
    lease.finish({"status": status, "run_id": run_id})
    return str(run_id)
