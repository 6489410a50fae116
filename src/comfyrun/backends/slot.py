"""A `Slot`: room for one job on one backend of a pool (backends.pool), from before its claim
until its job is done; it tells its backend how fast that backend's prompts come and go
(core.pipeline)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from comfyrun.backends.backend import Backend

if TYPE_CHECKING:
    from comfyrun.backends.pool import BackendPool

#: How long a run's backend may stay its own once the run is done with it, for ComfyUI to finish
#: the run's prompt (its history written, its models unloaded under --disable-smart-memory:
#: comfy.socket_events), at most.
PROMPT_END_WAIT_S = 120.0


def when_over(
    over: asyncio.Future[None] | None,
    fn: Callable[[], None],
    *,
    within_s: float = PROMPT_END_WAIT_S,
) -> None:
    """`fn()` once `over` is done, at once when there is none (or it is done), and `within_s`
    from now at the latest: `fn` must bear being called twice (a slot's `executed_prompt` and
    `release` do)."""
    if over is None or over.done():
        fn()
        return
    timer = asyncio.get_running_loop().call_later(within_s, fn)

    def ended(_: asyncio.Future[None]) -> None:
        timer.cancel()
        fn()

    over.add_done_callback(ended)


class Slot:
    """Room for one job on one backend, held from before the claim until the job is done.

    While its prompt waits in ComfyUI's queue (submitted, not started) the slot is `held`:
    the dispatcher may take the prompt back and run the job elsewhere (core.placement)."""

    def __init__(self, pool: BackendPool, backend: Backend) -> None:
        self.pool = pool
        self.backend = backend
        self.job_id: str | None = None
        self.priority = 0
        self.seq = 0  # bind order: the slot's place in its backend's ComfyUI queue
        self.claimed = 0  # its job's claim order, kept when a held prompt moves
        self.held = False
        self.executed = False
        self._released = False
        self._assigned = (backend.last_assigned, backend.last_assigned)  # (before, after)
        self._reserved_at = time.monotonic()

    def bind(self, job_id: str, *, priority: int = 0, claimed: int | None = None) -> None:
        """The slot runs `job_id`; `claimed`: the claim order of a job moved here (else
        now)."""
        assert self.job_id is None and not self._released
        self.backend.reserved -= 1
        self.backend.jobs.add(job_id)
        self.job_id = job_id
        self.pool._turn_taken(self)
        self.priority = priority
        self.seq = next(self.pool._counter)
        self.claimed = self.seq if claimed is None else claimed
        self.pool._bound[job_id] = self
        self.backend.sync_busy()
        self.pool._slots_changed()

    def hold(self, held: bool) -> None:
        """The prompt is in ComfyUI's queue and has not started (True), or it started."""
        if self.held != held and not self._released:
            self.held = held
            self.pool._slots_changed()

    def submitted(self) -> None:
        """The job's prompt is in ComfyUI's queue: the time since this room was reserved is how
        long the backend waited for it (core.pipeline)."""
        if not self._released:
            self.backend.pace.refill.note(time.monotonic() - self._reserved_at)

    def executed_prompt(self, run_s: float | None = None) -> None:
        """ComfyUI is done with the prompt (which ran `run_s` there, when known): the backend
        has room for the next one while the job's outputs are collected."""
        if not self.executed and not self._released and self.job_id is not None:
            self.executed = True
            self.held = False
            self.backend.executed += 1
            if run_s is not None:
                self.backend.pace.run.note(run_s)
            self.pool._slots_changed()

    def release(self, *, done: bool = False) -> None:
        if self._released:
            return
        self._released = True
        self.held = False
        if self.executed:
            self.backend.executed -= 1
        if self.job_id is None:
            self.backend.reserved -= 1
            # room held and given back unused (nothing to claim): no change to wake anyone for
            # (the dispatcher would spin), and the round robin stays where it was
            self.pool._turn_given_back(self)
            self.pool._room.set()
            return
        if self.pool._bound.get(self.job_id) is self:
            del self.pool._bound[self.job_id]
        self.backend.jobs.discard(self.job_id)
        self.backend.cut_jobs.pop(self.job_id, None)
        if done:
            self.backend.jobs_done += 1
        self.backend.sync_busy()
        self.pool._slots_changed()


__all__ = ["PROMPT_END_WAIT_S", "Slot", "when_over"]
