"""What the dispatcher's claim loop waits for between its passes: a change in the pool (a
slot freed, a prompt started or held, a backend's state), new work in the store, or the idle
timeout (a retry that becomes runnable).

The loop passes several times a job (each change of a job's slot is one: bound, held, started,
executed, released), and waiting as `asyncio.wait` on two fresh tasks (the pool's change, the
store's wait) made and cancelled two tasks each time. Here the pool's changes resolve one
future (a pool listener), and the store's wait is one task kept from pass to pass while it
still waits for what the next pass would wait for (the same work token, a deadline no later):
a wait begun earlier on the same token catches everything a new one would.

A change of the pool wakes the loop a turn of the event loop later (`call_soon`), so that the
changes made in one turn (and the run steps that follow at once) make one pass, not one each:
woken at once, a worker under load passed ~40 % more often than with the tasks' own delay, its
extra passes landing while a prompt was held and asking the store for the queue's head each
time (PostgreSQL: a round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from comfyrun.backends.pool import BackendPool
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

#: How long the claim loop pauses after the store's wait for work failed.
WAIT_ERROR_PAUSE_S = 1.0


class ClaimWake:
    """The claim loop's wait (see the module docstring); `close` when the loop is done."""

    def __init__(
        self,
        pool: BackendPool,
        store: JobStore,
        types: Sequence[str],
        idle_timeout: Callable[[], float],
    ) -> None:
        self._pool = pool
        self._store = store
        self._types = tuple(types)
        self._idle_timeout = idle_timeout
        self._woken: asyncio.Future[None] | None = None
        #: the store's wait, with the token it waits on and when it times out (loop time)
        self._work: asyncio.Task[None] | None = None
        self._work_since: int | None = None
        self._work_deadline = 0.0
        self._soon = False
        #: A nudge that came while the loop was not waiting: its next wait returns at once.
        self._nudged = False
        pool.add_listener(self._pool_changed)

    def nudge(self) -> None:
        """Wake the loop for a change neither the pool nor the store tells (a staging job's
        place freed, its files in: dispatch.staging); one that comes mid-pass is kept for the
        next wait."""
        if self._woken is None:
            self._nudged = True
        else:
            self._pool_changed()

    def _pool_changed(self) -> None:
        """A pool listener: wakes a waiting loop, a turn later (see the module docstring)."""
        if self._woken is not None and not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self, *_: object) -> None:
        self._soon = False
        woken = self._woken
        if woken is not None and not woken.done():
            woken.set_result(None)

    async def wait(self, generation: int, token: int | None) -> bool:
        """Until the pool changes after `generation` or the store's wait on `token` ends (new
        work, or the idle timeout). True when the store's wait ended (the last claim's
        "nothing" is stale), whether or not the pool changed too."""
        if self._nudged:
            self._nudged = False
            return False
        work = self._work_wait(token)
        if self._pool.generation == generation and not work.done():
            woken = self._woken = asyncio.get_running_loop().create_future()
            work.add_done_callback(self._wake)
            try:
                await woken
            finally:
                self._woken = None
                work.remove_done_callback(self._wake)
        if not work.done():
            return False
        self._work = None
        if not work.cancelled() and work.exception() is not None:
            # the store is failing: the loop passes again (its claims back off if they fail
            # too), but not at once, or a wait that fails at once would have it spin
            log.warning("waiting for work failed: %s", work.exception())
            await asyncio.sleep(WAIT_ERROR_PAUSE_S)
        return True

    def _work_wait(self, token: int | None) -> asyncio.Task[None]:
        """The store's wait for work after `token`: the one running, when it waits on the same
        token and times out no later than a new one would; else a new one."""
        timeout = self._idle_timeout()
        deadline = asyncio.get_running_loop().time() + timeout
        work = self._work
        if work is not None:
            if self._work_since == token and (work.done() or self._work_deadline <= deadline):
                return work  # still waiting for what the pass would, or woken since it began
            # on a token that moved (the pass that read the new one saw the work that woke
            # it, if it did: no pass more for it), or past a retry due sooner
            work.cancel()
            if work.done() and not work.cancelled():
                work.exception()  # retrieved
        self._work = asyncio.ensure_future(
            self._store.wait_for_work(timeout, since=token, types=self._types)
        )
        self._work_since = token
        self._work_deadline = deadline
        return self._work

    async def close(self) -> None:
        """Stop the store's wait (the claim loop stopped)."""
        work, self._work = self._work, None
        if work is not None:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
        self._wake()


__all__ = ["WAIT_ERROR_PAUSE_S", "ClaimWake"]
