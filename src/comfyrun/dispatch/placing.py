"""Where a claimed job runs (mixed into the Dispatcher, dispatch.dispatcher): on the backend
reserved for it if it fits there and no idle backend fits it better, else on the best one with
room it fits, else parked until one has room; failed at once when no backend of the pool can
ever run it (core.fit, core.placement).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import replace

from comfyrun.backends.pool import Slot
from comfyrun.core.job import Job, JobError, JobStatus
from comfyrun.core.placement import BETTER_FIELDS, BackendView, choose_for_job, placement_key
from comfyrun.core.retry import failed_on
from comfyrun.core.state import Event
from comfyrun.dispatch.parts import DispatcherParts
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import Changes

log = logging.getLogger("comfyrun.dispatch.dispatcher")


class Placing(DispatcherParts):
    """Placing claimed jobs on backends (the Dispatcher sets these)."""

    async def _place(self, job: Job, slot: Slot, *, noted: tuple[str, str] | None = None) -> None:
        """Start `job` on the slot's backend if it fits there and no idle backend fits it
        better; else on the best backend with room it fits; else park it, or fail it when no
        backend of the pool can ever run it. `noted`: (backend, prompt id) the claim recorded
        for a first attempt, used only if the job runs on that backend."""
        fits = self.fit.fitter(job)
        affinity = self.router.affinity(job)
        failed = failed_on(job)
        views = {v.name: v for v in self._views_without(slot)}
        best = choose_for_job(views.values(), fits, affinity=affinity, failed_on=failed)
        here = slot.backend.name
        if (
            best is not None
            and best != here
            and (
                not fits(here)
                or not slot.backend.accepts_new  # drained since its room was reserved
                or placement_key(views[best], affinity, failed)[:BETTER_FIELDS]
                < placement_key(views[here], affinity, failed)[:BETTER_FIELDS]  # not just in turn
            )
        ):
            better = self.pool.try_reserve(on=best)
            if better is not None:
                slot.release()
                slot = better
        if not slot.backend.accepts_new:
            # drained (or stopped) while the job was being claimed, and no other backend has
            # room: back to the queue, to wait there for one
            slot.release()
            await self._give_back(job, f"backend {slot.backend.name} was drained")
            return
        if fits(slot.backend.name):
            noted_prompt = None
            if noted is not None and noted[0] == slot.backend.name and job.attempts == 1:
                noted_prompt = noted[1]
            self._start_run(job, slot, noted_prompt=noted_prompt)
            return
        slot.release()
        reasons = self.fit.misfits(job)
        if reasons is None:
            self._parked[job.id] = job
            log.info(
                "job %s waits for a backend that can run it",
                job.id,
                extra={"action": "job_parked", "job_id": job.id, "backend": None},
            )
            return
        await self._fail_claimed(
            job,
            JobError(
                code="no_backend_fits",
                message="no backend can run this job: " + "; ".join(r.describe() for r in reasons),
                details={"backends": [r.to_dict() for r in reasons]},
            ),
        )

    async def _place_parked(self) -> bool:
        """Start the best parked job that fits a backend with room now."""
        if not self._parked:
            return False
        order = sorted(
            self._parked.values(), key=lambda j: (-j.priority, j.fair_tag, j.rank_at, j.id)
        )
        views = self.pool.views()
        for job in order:
            name = choose_for_job(
                views,
                self.fit.fitter(job),
                affinity=self.router.affinity(job),
                failed_on=failed_on(job),
            )
            slot = self.pool.try_reserve(on=name) if name is not None else None
            if slot is not None:
                del self._parked[job.id]
                self._start_run(job, slot)
                return True
        return False

    def _views_without(self, slot: Slot) -> list[BackendView]:
        """The pool's views as if `slot` were not reserved (to compare its backend fairly), nor
        the slots of the claims still in flight (each may find no job: a job claimed beside
        them is placed as if they had not been made)."""
        reserved = Counter(s.backend.name for s in self._claiming if s is not slot)
        reserved[slot.backend.name] += 1
        return [
            replace(v, inflight=v.inflight - reserved[v.name]) if v.name in reserved else v
            for v in self.pool.views()
        ]

    async def _fail_unplaceable(self) -> None:
        """No backend can ever run a job (all in error): fail the next job with why, or wait
        for work or for a backend to change."""
        try:
            token = self.store.work_token(self.types)
            job = await self.store.claim(self.worker_id, self.settings.lease_s, types=self.types)
            if job is None:
                await self.store.wait_for_work(
                    self.settings.idle_wait_s, since=token, types=self.types
                )
                return
            error = JobError(
                code="backend_unavailable",
                message=f"no backend can run jobs: {self.pool.problems()}",
            )
            await self._fail_claimed(job, error)
        except ComfyrunError as exc:
            log.warning("failing an unplaceable job failed: %s", exc)
            await asyncio.sleep(1.0)  # the store is failing: back off

    async def _give_back(self, job: Job, why: str) -> None:
        """A job this worker just claimed goes back to the queue unstarted (not counted as an
        attempt)."""
        await self.store.transition(
            job.id,
            Event.REQUEUE,
            expect=JobStatus.RUNNING,
            changes=Changes(clear_lease=True, uncount_attempt=True),
            worker_id=self.worker_id,
        )
        log.info(
            "job %s back in the queue unstarted: %s",
            job.id,
            why,
            extra={"action": "job_requeued", "job_id": job.id, "backend": None},
        )

    async def _fail_claimed(self, job: Job, error: JobError) -> None:
        """Fail a job this worker just claimed, without running it."""
        await self.store.transition(
            job.id,
            Event.FAIL,
            expect=JobStatus.RUNNING,
            changes=Changes(error=error, expires_at=time.time() + self.settings.retention_s),
            worker_id=self.worker_id,
        )
        log.warning(
            "job %s failed: %s",
            job.id,
            error.message,
            extra={"action": "job_fail", "job_id": job.id, "backend": None},
        )


__all__ = ["Placing"]
