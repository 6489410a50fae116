"""The queue's bound (Settings.queue_max): how many jobs may wait before a submission is
refused (`429 queue_full`), counted over the whole queue, whoever's jobs they are.

Counting the queue may scan it (PostgreSQL's; SQLite keeps its counts), so far from the bound a
count up to COUNT_TTL_S old, plus the jobs admitted here since, stands in for it; near the
bound it is exact. Submissions that find the count stale together wait for one count, not one
each (32 clients at once made up to 32 at each expiry: ~15 a second on PostgreSQL, each a scan
of the unfinished jobs). One bound serves the service
and every view of it (an API key's), so its count and what it admitted since are the same for
all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from comfyrun.aio import retrieved
from comfyrun.errors import QueueFull

#: How long a count of the queue may stand in for a fresh one (far from the bound).
COUNT_TTL_S = 1.0
#: Share of the bound below which a count that is not stale stands in for a fresh one.
NEAR = 0.9


class QueueBound:
    """Admits submissions while the queue holds fewer than `bound` jobs (None: no bound)."""

    def __init__(
        self,
        bound: int | None,
        retry_after_s: int,
        count: Callable[[], Awaitable[int]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bound = bound
        self.retry_after_s = retry_after_s
        self._count = count
        self._clock = clock
        self._counted = 0
        self._counted_at = -1e9
        #: jobs admitted here since the count
        self._since = 0
        self._counting: asyncio.Future[int] | None = None

    async def admit(self, adding: int = 1) -> None:
        """Count `adding` jobs in, or raise QueueFull when they would take the queue past the
        bound."""
        bound = self.bound
        if bound is None:
            return
        fresh = self._clock() - self._counted_at < COUNT_TTL_S
        if fresh and self._counted + self._since + adding <= bound * NEAR:
            self._since += adding
            return
        queued = await self._fresh_count()
        # the jobs admitted since the count began, this one's included, on top of it
        if queued + self._since + adding > bound:
            raise QueueFull(
                f"the queue holds {queued + self._since} jobs (bound {bound}); retry later",
                retry_after_s=self.retry_after_s,
            )
        self._since += adding

    async def queued(self) -> int:
        """The jobs queued: a count up to COUNT_TTL_S old plus those admitted here since (as
        far from the bound), or a count made now (shared with any under way)."""
        if self._clock() - self._counted_at < COUNT_TTL_S:
            return self._counted + self._since
        return await self._fresh_count()

    async def _fresh_count(self) -> int:
        """A count begun now, or the one under way (shared by all who wait for it)."""
        counting = self._counting
        if counting is None:
            counting = self._counting = asyncio.ensure_future(self._recount())
            counting.add_done_callback(retrieved)
        return await asyncio.shield(counting)

    async def _recount(self) -> int:
        try:
            queued = await self._count()
            self._counted, self._counted_at, self._since = queued, self._clock(), 0
            return queued
        finally:
            self._counting = None


__all__ = ["COUNT_TTL_S", "QueueBound"]
