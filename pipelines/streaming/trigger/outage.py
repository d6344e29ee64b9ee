"""A store that went away: landing pauses, with one warning when it goes and one when it is back."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("pipelines.streaming.trigger")


def backoff(attempt: int, max_s: float) -> float:
    """The pause before retry ``attempt`` (1, 2, …): 1 s, 2 s, 4 s… up to ``max_s``."""
    return min(max_s, 2.0 ** (attempt - 1))


class Outage:
    """Pauses between attempts double up to ``max_s``; nothing is committed meanwhile (the caller
    reads its batch again), so an outage loses nothing."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.since: float | None = None
        self.attempts = 0

    def failed(self, exc: Exception) -> float:
        """Record a failed attempt; returns the pause before the next one."""
        if self.since is None:
            self.since, self.attempts = time.monotonic(), 0
            log.warning("landing paused, offsets not committed: %s; retrying with backoff", exc)
        self.attempts += 1
        delay = backoff(self.attempts, self.max_s)
        log.debug("the store is unavailable (attempt %d, next in %.0fs): %s", self.attempts, delay, exc)
        return delay

    def over(self) -> None:
        """A batch went through: the outage, if there was one, is over."""
        if self.since is not None:
            log.warning("landing resumed: the store answers again after %.0fs", time.monotonic() - self.since)
            self.since = None
