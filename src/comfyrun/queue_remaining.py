"""ComfyUI's `queue_remaining` (the jobs queued or running), as the face's `status` messages
tell it: counted by the store, per view (every job, or an API key's own).

Counting may scan the unfinished jobs: PostgreSQL counts their rows (~25 ms with 100,000 jobs
queued, on 2 cores), SQLite reads the counts it keeps (well under a millisecond). The face
asks for a fresh count at every prompt's end, so that the end is told with the queue without
it, and a socket's greeting takes one up to REMAINING_TTL_S old. A count of a short queue
(under LARGE jobs) is made anew whenever a fresh one is asked for: exact, as before, however
long it took (on a loaded machine a count waits for a core too). A count of a large queue
stands in for a fresh one for COST_SHARE times as long as it took (at most REMAINING_TTL_S),
and whoever asks meanwhile shares the count under way: however many prompts end, counting a
large queue takes the store about 1/COST_SHARE of its time at most, not one scan a prompt
(forty prompts a second made PostgreSQL count 100,000 rows forty times a second). A large
queue's size told a moment late, a few jobs off, misleads no client that shows it.

Where the store can count at once (`count_now`: SQLite's kept counts, read on the event loop's
thread), a count is made there and then, whatever the queue's length, without a task: `now`
gives what `get` would, without a turn of the event loop (None where a count must be waited
for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from comfyrun.aio import retrieved

#: How long a count may stand in when a fresh one is not asked for (a socket's greeting).
REMAINING_TTL_S = 0.5
#: A queue this long is large: its count is shared, and stands in for a while.
LARGE = 1_000
#: A large queue's count stands in for a fresh one for this many times as long as it took.
COST_SHARE = 10.0


class RemainingCount:
    """The size of one view's queue, counted by `count` as described above."""

    def __init__(
        self,
        count: Callable[[], Awaitable[int]],
        *,
        count_now: Callable[[], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._count_now = count_now
        self._clock = clock
        #: the latest count to end: its value, when it began, and how long it took
        self._kept: tuple[int, float, float] | None = None
        #: the count under way that others may share (the latest begun)
        self._counting: asyncio.Future[int] | None = None

    async def get(self, *, fresh: bool) -> int:
        value = self.now(fresh=fresh)
        if value is not None:
            return value
        kept = self._kept
        counting = self._counting
        if kept is not None and kept[0] >= LARGE and counting is not None:
            return await asyncio.shield(counting)
        return await self._counted()

    def now(self, *, fresh: bool) -> int | None:
        """The count `get` gives, where it needs no wait: one that may stand in, or one the
        store makes at once (`count_now`); None where a count must be waited for."""
        kept = self._kept
        if kept is not None:
            value, began, took = kept
            if not fresh:
                stands_for = REMAINING_TTL_S
            else:
                stands_for = min(REMAINING_TTL_S, took * COST_SHARE) if value >= LARGE else 0.0
            if self._clock() - began < stands_for:
                return value
        if self._count_now is None:
            return None
        began = self._clock()
        counted = self._count_now()
        if counted is not None:
            self._keep(counted, began)
        return counted

    async def _counted(self) -> int:
        """A count begun now (it goes on for those who share it if this caller leaves)."""
        counting = asyncio.ensure_future(self._recount())
        counting.add_done_callback(retrieved)
        self._counting = counting
        return await asyncio.shield(counting)

    async def _recount(self) -> int:
        began = self._clock()
        try:
            value = await self._count()
        finally:
            if self._counting is asyncio.current_task():
                self._counting = None
        self._keep(value, began)
        return value

    def _keep(self, value: int, began: float) -> None:
        kept = self._kept
        if kept is None or began >= kept[1]:  # (a later count may have ended first)
            self._kept = (value, began, self._clock() - began)


__all__ = ["COST_SHARE", "LARGE", "REMAINING_TTL_S", "RemainingCount"]
