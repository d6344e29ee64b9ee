# mypy: strict-equality
"""When the trigger launches training, once per trigger key across all its replicas.

A model is retrained when its rows landed since its last run reach ``retrain.min_new_rows`` (and
it has ``retrain.min_rows`` in all), or when a request arrives on ``mlops.retrain-requests``
(:mod:`pipelines.streaming.retraining.requests`). Each launch has a key (``<model>-rows-<baseline>`` or
``<model>-request-<request_id>``; a request without id is keyed by its topic/partition/offset, and
one for the same model and reason as another within ``request_cooldown_s`` takes that one's key,
so it starts nothing more) *claimed* in the shared state before the launch, so one replica
launches it. Launches run in a background thread and are reported on ``mlops.model-events``; a key
left ``pending`` (its replica died) is resumed when a replica starts or partitions move, and the
launcher's lease tells a launch still running elsewhere from an interrupted one: a key whose lease
is held elsewhere (or whose ledger store is unreachable) is tried again later, until it is settled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, TypedDict, Unpack

from kafka.consumer.fetcher import ConsumerRecord

from feature_specs import FeatureSpec
from pipelines.storage import StoreUnavailable
from pipelines.streaming.events import EventPublisher
from pipelines.streaming.landing.index import LandingIndex
from pipelines.streaming.retraining.launch import LaunchInProgress, release_leases
from pipelines.streaming.retraining.requests import BadRequest, parse_retrain_request
from pipelines.streaming.retraining.state import RetrainState

log = logging.getLogger("pipelines.streaming.trigger")

Launcher = Callable[..., str]


class LaunchDetails(TypedDict, total=False):
    """What a launch's key records about its cause, besides the reason."""

    new_rows: int
    request_id: str


#: pause before trying a launch again whose ledger store was unreachable.
STORE_RETRY_S = 10.0


class _Launches:
    """One daemon thread running launches in turn: a stopping trigger never waits for a training
    run to end (:meth:`close` hands its lease back instead)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue()
        self._unfinished = 0  # queued or running
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="launch", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            raise RuntimeError("closed")
        with self._lock:
            self._unfinished += 1
        self._queue.put((fn, args))

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        with self._lock:
            return self._unfinished == 0

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("launch failed unexpectedly")
            finally:
                with self._lock:
                    self._unfinished -= 1

    def close(self, wait_s: float) -> bool:
        """Stop taking work (what is queued stays pending in the state); True if nothing runs after ``wait_s``."""
        self._closed = True
        while True:  # drop what has not started
            try:
                if self._queue.get_nowait() is not None:
                    with self._lock:
                        self._unfinished -= 1
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join(wait_s)
        return not self._thread.is_alive()


class Retrainer:
    def __init__(
        self,
        specs: Mapping[str, FeatureSpec],
        index: LandingIndex,
        state: RetrainState,
        events: EventPublisher,
        launcher: Launcher,
        landed_rows: Callable[[str], int] | None = None,
        request_cooldown_s: float = 6 * 3600,
    ) -> None:
        self.request_cooldown_s = request_cooldown_s
        self.specs, self.index, self.state, self.events, self.launcher = specs, index, state, events, launcher
        self.landed_rows = landed_rows or index.rows
        """Rows a request may train on: every landed part, backfills included (the index counts
        only what the trigger landed itself)."""
        self._launches = _Launches()
        self._closing = False  # stopping: a launch that fails now was abandoned, not failed
        self._retries: dict[str, threading.Timer] = {}
        """Keys waiting to be tried again (one timer per key, however often it is resumed)."""

    def close(self, wait_s: float = 2.0) -> bool:
        """Stop launching. A launch still running after ``wait_s`` is handed back: its lease is
        released, its key stays ``pending`` and the next trigger to start resumes it. Returns
        whether one was (its run, abandoned, may have processes of its own left to end)."""
        for timer in list(self._retries.values()):
            timer.cancel()
        self._closing = True
        if self._launches.close(wait_s):
            return False
        for key in release_leases():
            log.warning("launch %s handed back unfinished: the next trigger to start runs it again", key)
        return True

    @property
    def idle(self) -> bool:
        """No launch queued, running or waiting to be tried again."""
        return self._launches.idle and not self._retries

    def check_new_rows(self, model: str) -> None:
        if self.state.pending(model):
            return  # one launch at a time per model: rows landed meanwhile count towards the next
        retrain = self.specs[model].retrain
        baseline = self.state.rows_at_last_run(model)
        total = self.index.rows(model)
        if total - baseline >= retrain.min_new_rows and total >= retrain.min_rows:
            self._launch(model, f"{model}-rows-{baseline}", reason="new_rows", new_rows=total - baseline)

    def request(self, record: ConsumerRecord) -> None:
        where = f"{record.topic}/{record.partition}/{record.offset}"
        try:
            request = parse_retrain_request(record.value, self.specs)
        except BadRequest as exc:
            log.warning("retrain request at %s refused: %s", where, exc)
            self.events.emit("retrain.rejected", "", reason=str(exc), offset=record.offset)
            return
        model, request_id = request.model, request.request_id
        if request_id is None:
            here = where.replace("/", "-")
            request_id = self.state.request_owner(
                model, request.reason, here, record.timestamp, self.request_cooldown_s
            )
            if request_id != here:
                log.info(
                    "%s: retrain request at %s repeats %s within the cooldown: nothing more", model, where, request_id
                )
        total, needed = self.landed_rows(model), self.specs[model].retrain.min_rows
        key = f"{model}-request-{request_id}"
        if total < needed:
            if self.state.claim(key, model, "skipped", reason=request.reason):
                log.info("%s: retrain request %s skipped: %d rows landed, %d needed", model, key, total, needed)
                self.events.emit("retrain.skipped", model, key=key, reason=f"{total} rows landed, {needed} needed")
            return
        self._launch(model, key, reason=request.reason, request_id=request_id)

    def resume_pending(self) -> None:
        for key, entry in self.state.pending():
            log.info("%s: resuming the launch of %s", entry["model"], key)
            self._launches.submit(self._run, entry["model"], key)

    def _launch(self, model: str, key: str, reason: str, **details: Unpack[LaunchDetails]) -> None:
        rows = self.index.rows(model)
        if not self.state.claim(key, model, "pending", rows=rows, reason=reason, landed_rows=rows, **details):
            return  # claimed before: a replayed batch or request, or another replica
        self.events.emit("retrain.triggered", model, key=key, reason=reason, landed_rows=rows, **details)
        self._launches.submit(self._run, model, key)

    def _run(self, model: str, key: str) -> None:
        try:
            self._launch_pending(model, key)
        except LaunchInProgress as exc:
            log.info("%s: launch %s is running elsewhere (%s): looking again in %.0fs", model, key, exc, exc.retry_in)
            self._later(exc.retry_in + 1, model, key)
        except StoreUnavailable as exc:
            log.warning("%s: launch %s postponed: %s", model, key, exc)
            self._later(STORE_RETRY_S, model, key)

    def _later(self, delay: float, model: str, key: str) -> None:
        if key in self._retries:
            return
        timer = self._retries[key] = threading.Timer(delay, self._resubmit, (model, key))
        timer.daemon = True
        timer.start()

    def _resubmit(self, model: str, key: str) -> None:
        self._retries.pop(key, None)
        with suppress(RuntimeError):  # closed meanwhile: the key stays pending for the next start
            self._launches.submit(self._run, model, key)

    def _launch_pending(self, model: str, key: str) -> None:
        entry = self.state.get(key)
        if entry is None or entry["status"] != "pending":
            return
        try:
            run_id = self.launcher(model, key=key)
            if not run_id:
                raise RuntimeError("the launcher returned no run id")
        except (LaunchInProgress, StoreUnavailable):
            raise
        except Exception as exc:
            if self._closing:
                log.info("%s: launch %s abandoned at stop (%s): its key stays pending", model, key, exc)
                return
            log.exception("%s: training launch %s failed", model, key)
            error = f"{type(exc).__name__}: {exc}"
            if self.state.settle(key, "failed", error=error):
                self.events.emit("training.failed", model, key=key, error=error)
            return
        if self.state.settle(key, "launched", run_id=run_id):
            self.events.emit("training.launched", model, key=key, run_id=run_id)
            log.info("%s: training launched for %s: run %s", model, key, run_id)
