"""Housekeeping every store does the same way: sweep lost leases, requeue stuck jobs, expire
finished ones. Each store finds the candidates with its own query; the decision per job is pure
(`lease_lost_step`), and the write is the store's ordinary compare-and-set `transition`, so a job
that moved on meanwhile is skipped, not clobbered.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

from comfyrun.core.job import Job, JobError, JobStatus
from comfyrun.core.retry import FailureKind, decide
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, NotFound
from comfyrun.store.base import Changes, JobStore

log = logging.getLogger(__name__)

Step = Callable[[Job], tuple[Event, Changes]]


def lease_lost_step(
    job: Job, now: float, rng: random.Random | None = None
) -> tuple[Event, Changes]:
    """A job whose worker stopped renewing: requeued while retries remain, else failed.

    A canceling job ends canceled (lease_lost in `canceling` leads there).
    """
    if job.status is JobStatus.CANCELING:
        return Event.LEASE_LOST, Changes(extra={"reason": "lease_lost"})
    decision = decide(job, FailureKind.LEASE_LOST, now=now, rng=rng)
    if decision.retry:
        return Event.LEASE_LOST, Changes(
            next_run_at=decision.next_run_at, extra={"reason": "lease_lost"}
        )
    error = JobError(
        code="lease_lost",
        message=f"the worker holding the job stopped renewing its lease "
        f"(attempt {job.attempts} of {job.max_retries + 1})",
        details={"worker_id": job.worker_id},
    )
    return Event.FAIL, Changes(error=error, extra={"reason": "lease_lost"})


def requeue_step(job: Job) -> tuple[Event, Changes]:
    return Event.REQUEUE, Changes(extra={"reason": "requeue_stuck"})


def expire_step(job: Job) -> tuple[Event, Changes]:
    return Event.EXPIRE, Changes()


async def apply_each(
    store: JobStore, jobs: Iterable[Job], step: Step, *, now: float, action: str
) -> list[Job]:
    """Transition each job as `step` says, fenced on the status (and worker) it was read with."""
    done: list[Job] = []
    for job in jobs:
        event, changes = step(job)
        try:
            moved = await store.transition(
                job.id,
                event,
                expect=job.status,
                changes=changes,
                now=now,
                worker_id=job.worker_id if job.status is not JobStatus.QUEUED else None,
            )
        except (Conflict, NotFound):
            continue  # it moved on (renewed, finished, deleted) since we read it
        log.info(
            "%s: job %s %s -> %s",
            action,
            job.id,
            job.status.value,
            moved.status.value,
            extra={"action": action, "job_id": job.id, "backend": job.backend},
        )
        done.append(moved)
    return done


__all__ = ["apply_each", "expire_step", "lease_lost_step", "requeue_step"]
