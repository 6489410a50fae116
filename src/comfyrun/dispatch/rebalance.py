"""Late binding after the claim: a prompt held in a busy backend's ComfyUI queue (claimed, not
started) is taken back and its job run on a backend that fell idle, moved to a backend that
frees sooner, or put back in the queue for a job of higher priority (core.placement's
choose_takeback, choose_overtaken, choose_preemption). `Rebalancing` is mixed into the
Dispatcher (dispatch.dispatcher), which sets what it reads.
"""

from __future__ import annotations

import asyncio
import logging

from comfyrun.core.job import JobStatus
from comfyrun.core.placement import (
    BackendView,
    HeldPrompt,
    RunningPrompt,
    choose_for_job,
    choose_overtaken,
    choose_preemption,
    choose_takeback,
    has_room,
    is_idle,
)
from comfyrun.core.retry import failed_on
from comfyrun.core.state import Event
from comfyrun.dispatch.parts import DispatcherParts
from comfyrun.dispatch.run import JobRun
from comfyrun.store.base import Changes

log = logging.getLogger("comfyrun.dispatch.dispatcher")

#: How many claimed jobs per backend may wait (parked) for a busy backend that can run them.
PARK_PER_BACKEND = 2


class Rebalancing(DispatcherParts):
    """Moves of held prompts between backends (the Dispatcher sets these)."""

    _runs: dict[str, tuple[JobRun, asyncio.Task[None]]]

    async def _rebalance(self) -> bool:
        """Take a held prompt back (deleted from ComfyUI's queue before it started) to run it
        on a backend that fell idle, or to make room for a job of higher priority."""
        held = self.pool.held_prompts()
        if not held:
            return False
        views = self.pool.views()
        if await self._off_drained(held, views):
            return True
        queued = await self._claimable_priority(views)

        def fits(job_id: str, backend: str) -> bool:
            entry = self._runs.get(job_id)
            if entry is None or not self.fit.fitter(entry[0].job)(backend):
                return False
            if queued is None or entry[0].job.priority > queued:
                return True
            # model-aware: an idle backend takes a queued job its models fit rather than a
            # held prompt that would load others (it is not left idle either way)
            affinity = self.router.affinity(entry[0].job)
            return affinity is None or affinity(backend) > 0

        pick = choose_takeback(views, held, fits)
        if pick is not None:
            return await self._move(*pick)
        pick = choose_overtaken(views, held, self._running_prompts(), fits)
        if pick is not None:
            head = await self.store.next_priority()
            mine = next(h.priority for h in held if h.job_id == pick[0])
            if (head is None or head <= mine) and await self._move(*pick):
                return True
        # a held prompt must not start before a job of higher priority that waits: held
        # elsewhere, parked, or (when there is no room for it) still in the queue
        waiting = [h.priority for h in held] + [j.priority for j in self._parked.values()]
        if not any(has_room(v) for v in views):
            head = await self.store.next_priority(types=self.types)
            if head is not None:
                waiting.append(head)
        victim = choose_preemption(held, max(waiting))
        if victim is None:
            return False
        return await self._move(victim, None)

    async def _off_drained(self, held: list[HeldPrompt], views: list[BackendView]) -> bool:
        """A prompt held behind another on a backend an admin drained (or is stopping) does
        not wait there: it moves to a backend with room that fits it, else back to the queue
        (to wait for one there)."""
        drained = []
        for prompt in held:
            backend = self.pool.get(prompt.backend)
            if backend is not None and not backend.accepts_new and prompt.job_id in self._runs:
                drained.append(prompt)
        if not drained:
            return False
        prompt = min(drained, key=lambda h: (-h.priority, h.seq))
        job = self._runs[prompt.job_id][0].job
        target = choose_for_job(
            views,
            self.fit.fitter(job),
            affinity=self.router.affinity(job),
            failed_on=failed_on(job),
        )
        return await self._move(prompt.job_id, target, drained=True)

    def _running_prompts(self) -> dict[str, RunningPrompt]:
        """What each backend runs now, with its estimated cost left (core.placement)."""
        found = {}
        for name, (job_id, claimed) in self.pool.running_jobs().items():
            entry = self._runs.get(job_id)
            if entry is not None:
                found[name] = RunningPrompt(name, claimed, entry[0].remaining_cost)
        return found

    async def _move(self, job_id: str, target: str | None, *, drained: bool = False) -> bool:
        """Take `job_id`'s held prompt back and run the job on `target` (None: back to the
        queue; `drained`: because its backend was drained, the attempt not counted). True when
        something changed."""
        entry = self._runs.get(job_id)
        if entry is None:
            return False
        run, task = entry
        slot = self.pool.try_reserve(on=target) if target is not None else None
        if target is not None and slot is None:
            return False
        try:
            moved = await run.take_back()
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if not moved:
            if slot is not None:
                slot.release()
            return True
        # the old run ends at once, without touching the store: wait for it to let go
        await asyncio.wait({task}, timeout=self.settings.stop_grace_s + 1.0)
        if slot is not None:
            self._start_run(run.job, slot, claimed=run.slot.claimed)
        else:
            await self.store.transition(
                job_id,
                Event.REQUEUE,
                expect=JobStatus.RUNNING,
                changes=Changes(clear_lease=True, uncount_attempt=drained),
                worker_id=self.worker_id,
            )
            log.info(
                "job %s back in the queue: %s",
                job_id,
                f"backend {run.backend.name} was drained"
                if drained
                else "a job of higher priority waits",
                extra={"action": "job_preempted", "job_id": job_id, "backend": run.backend.name},
            )
        return True

    async def _claimable_priority(self, views: list[BackendView]) -> int | None:
        """With model-aware routing and an idle backend that could claim a queued job: the
        priority of the job the queue would give; else None."""
        if not self.router.enabled or not any(is_idle(v) for v in views):
            return None
        if len(self._parked) >= PARK_PER_BACKEND * max(1, len(self.pool.backends)):
            return None
        return await self.store.next_priority(types=self.types)


__all__ = ["PARK_PER_BACKEND", "Rebalancing"]
