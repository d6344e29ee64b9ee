"""A circuit breaker: after ``failures`` failed calls in a row it opens and refuses calls for
``reset_s``; then one trial call goes through (half-open): success closes it, failure reopens it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        reset_s: float = 5.0,
        on_change: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self.failures, self.reset_s = failures, reset_s
        self.on_change = on_change  # called with (old state, new state)
        self._clock = clock
        self._lock = threading.Lock()
        self._state, self._count, self._opened_at, self._trial = CLOSED, 0, 0.0, False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """May a call go out now? (In half-open, only one trial call at a time.)"""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.reset_s:
                    return False
                self._set(HALF_OPEN)
            if self._trial:
                return False
            self._trial = True
            return True

    def success(self) -> None:
        with self._lock:
            self._count, self._trial = 0, False
            if self._state != CLOSED:
                self._set(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            self._trial = False
            if self._state == HALF_OPEN or self._count >= self.failures:
                self._opened_at = self._clock()
                if self._state != OPEN:
                    self._set(OPEN)

    def _set(self, state: str) -> None:
        old, self._state = self._state, state
        if self.on_change is not None:
            self.on_change(old, state)
