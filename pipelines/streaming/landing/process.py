"""The trigger's landing, beside its consumer: the two halves of a record's cost on two cores.

Each record costs the trigger two things of about the same size, both Python under one GIL:
kafka-python decoding it inside ``poll``, then checking and landing it
(:func:`~pipelines.streaming.landing.batch.land_batch`). :class:`LandingProcess` lands in a child
process, so the consumer polls the next batch while this one lands (about 1.5x the events per
second where a second core is free). :class:`InlineLanding` lands in the trigger's own process
(``CONSTRUCTOS_TRIGGER_LANDING_PROCESS=false``: one core, one process less).

Both are used the same way: :meth:`submit` one batch (``{model: [raw values]}``), then
:meth:`result` its outcomes, or the landing's exception raised again (a store outage stays a
:class:`~pipelines.storage.StoreUnavailable`). One batch is in flight at a time. The child only
lands: the consumer, dead letters, commits and retraining stay in the trigger, which commits a
batch's offsets once :meth:`result` has returned. The child dies with the trigger (``SIGKILL``
of the pair is a replica killed mid-batch: the landing index makes it safe).
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import logging
import multiprocessing
import os
import pickle
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Protocol

from feature_specs import load_spec
from pipelines.settings import Settings
from pipelines.streaming.intake.validation import Intake
from pipelines.streaming.landing.batch import BatchOutcome, land_batch
from pipelines.streaming.landing.log_index import open_index

Batches = dict[str, list[bytes | None]]  # model -> raw values of its records, in order
Outcomes = dict[str, BatchOutcome]


class LandingProcessDied(RuntimeError):
    """The landing child exited (killed, out of memory): the batch in flight is not landed."""


class Lander:
    """Lands batches of raw values: one :class:`Intake` per model, the store, the landing index."""

    def __init__(self, settings: Settings, models: Sequence[str]) -> None:
        self.intakes = {m: Intake(load_spec(m), settings.trigger_max_event_bytes) for m in models}
        self.store = settings.landing_store
        self.index = open_index(settings)

    def land(self, batches: Batches) -> Outcomes:
        return {m: land_batch(self.intakes[m], self.store, self.index, m, values) for m, values in batches.items()}


class Landing(Protocol):
    def submit(self, batches: Batches) -> None: ...
    def result(self) -> Outcomes: ...
    def close(self) -> None: ...


class InlineLanding:
    """:class:`Landing` in this process: :meth:`submit` lands at once."""

    def __init__(self, settings: Settings, models: Sequence[str]) -> None:
        self.lander = Lander(settings, models)
        self._done: Outcomes | BaseException = {}

    def submit(self, batches: Batches) -> None:
        try:
            self._done = self.lander.land(batches)
        except Exception as exc:  # raised by result(), as the child's would be
            self._done = exc

    def result(self) -> Outcomes:
        done, self._done = self._done, {}
        if isinstance(done, BaseException):
            raise done
        return done

    def close(self) -> None:
        pass


class LandingProcess:
    """:class:`Landing` in a child process (started here; it loads while the consumer joins its group).

    Children come from a fork server (forking the trigger itself is unsafe beside the Kafka
    clients' threads): it imports this module once, so a child after the first starts at once; the
    child takes the trigger's environment of the moment, as a spawned one would."""

    def __init__(self, settings: Settings, models: Sequence[str]) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self._conn, child = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        self._process = context.Process(
            target=_serve,
            args=(child, settings, list(models), level, dict(os.environ)),
            name="trigger-landing",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._ready = False

    def submit(self, batches: Batches) -> None:
        """Blocks, the first time, until the child has loaded (it answers ``(True, None)``)."""
        if not self._ready:
            self.result()
            self._ready = True
        try:
            self._conn.send(batches)
        except OSError as exc:  # the pipe broke: the child is gone
            raise self._died() from exc

    def result(self) -> Outcomes:
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._conn.close()  # the child reads EOF and exits
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _died(self) -> LandingProcessDied:
        self._process.join(timeout=5)
        return LandingProcessDied(f"the landing process exited (exit code {self._process.exitcode})")


def _serve(conn: Connection, settings: Settings, models: list[str], level: int, environ: dict[str, str]) -> None:
    """The child: land each batch received, answer ``(True, outcomes)`` or ``(False, exception)``."""
    _die_with_parent()
    os.environ.clear()  # the fork server's copy dates from its start
    os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trigger stops itself, then closes the pipe
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # as the trigger: its stacks on the log
    from pipelines.streaming.logs import configure_streaming_logging

    configure_streaming_logging(logging.getLevelName(level), settings=settings)
    lander = Lander(settings, models)
    gc.collect()
    gc.freeze()  # what is loaded lives as long as the process: out of the collector's full passes
    conn.send((True, None))  # ready
    while True:
        try:
            batches = conn.recv()
        except (EOFError, OSError):  # the trigger closed the pipe, or died
            return
        try:
            answer: tuple[bool, object] = (True, lander.land(batches))
        except Exception as exc:
            answer = (False, _portable(exc))
        try:
            conn.send(answer)
        except OSError:  # the trigger is gone
            return


def _portable(exc: Exception) -> Exception:
    """``exc``, or a RuntimeError naming it when it would not survive the pipe (pickle)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent, the fork server, dies (it does when the
    trigger does; elsewhere EOF on the pipe ends the child)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start(settings: Settings, models: Sequence[str]) -> Landing:
    """The landing of ``settings.trigger_landing_process``: a child process, or this one."""
    if settings.trigger_landing_process:
        return LandingProcess(settings, models)
    return InlineLanding(settings, models)
