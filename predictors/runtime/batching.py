"""Adaptive micro-batching: concurrent requests to one model scored in one runtime call.

Each request's validated columns wait in a queue; the queue is scored as one batch as soon as
the event loop has run every request that arrived with it (no added wait at low load: a lone
request is scored on the next loop turn), after ``max_wait`` seconds if that is set, or at once
when ``max_rows`` rows are waiting. Scores are split back in request order, so each answer is
exactly what scoring that request alone gives (row-wise models; tested).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

_Columns = dict[str, np.ndarray]


class MicroBatcher:
    def __init__(self, score: Callable[[_Columns], np.ndarray], *, max_rows: int, max_wait: float = 0.0) -> None:
        self.score, self.max_rows, self.max_wait = score, max_rows, max_wait
        self._waiting: list[tuple[_Columns, int, asyncio.Future[np.ndarray]]] = []
        self._rows = 0
        self._flush: asyncio.Handle | None = None
        self.batches = 0  # runtime calls made (for tests and metrics)

    async def __call__(self, columns: _Columns, rows: int) -> np.ndarray:
        if rows >= self.max_rows:  # already a full batch: no company needed
            return self.score(columns)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if self._rows + rows > self.max_rows:
            self._run()
        self._waiting.append((columns, rows, future))
        self._rows += rows
        if self._flush is None:
            self._flush = loop.call_later(self.max_wait, self._run) if self.max_wait else loop.call_soon(self._run)
        return await future

    def _run(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        waiting, self._waiting, self._rows = self._waiting, [], 0
        if not waiting:
            return
        self.batches += 1
        try:
            if len(waiting) == 1:
                parts = [self.score(waiting[0][0])]
            else:
                names = waiting[0][0].keys()
                merged = {name: np.concatenate([columns[name] for columns, _, _ in waiting]) for name in names}
                scores = self.score(merged)
                parts = np.split(scores, np.cumsum([rows for _, rows, _ in waiting])[:-1])
        except Exception as exc:  # every waiting request learns of it; none hangs
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), part in zip(waiting, parts, strict=True):
            if not future.done():  # a cancelled request (client gone) is skipped
                future.set_result(part)
