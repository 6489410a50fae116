"""The job service's changes and operations (mixed into JobService, comfyrun.service): cancel
and delete a job; the queue's size as ComfyUI reports it, the counts, retention clean-up and
requeueing jobs stuck running."""

from __future__ import annotations

import logging
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from comfyrun.config import Settings
from comfyrun.core.job import ACTIVE, Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, NotFound
from comfyrun.finished import FinishedJobs
from comfyrun.job_watch import JobView
from comfyrun.outputs import job_prefix
from comfyrun.queue_remaining import REMAINING_TTL_S, RemainingCount
from comfyrun.store.base import JobStore

log = logging.getLogger("comfyrun.service")


class FileDeleter(Protocol):
    """The part of the output storage the service needs: removing a job's files."""

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[str, int]
    queue_depth: int
    running: int
    oldest_queued_age_s: float | None


@dataclass(frozen=True, slots=True)
class CleanupResult:
    expired: int
    deleted: int
    files_deleted: int


class JobAdmin(ABC):
    """Changes and operations on jobs (JobService sets these)."""

    store: JobStore
    settings: Settings
    finished: FinishedJobs
    _files: FileDeleter | None
    _clock: Callable[[], float]
    #: each key's count of its jobs queued or running ("": every job's); shared with the
    #: views `using` makes
    _remaining: dict[str, RemainingCount]
    _key_scope: str

    # changes ------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobView:
        """Idempotent: a queued job ends canceled, a running one becomes canceling, a finished
        one is returned as it is."""
        for _ in range(10):
            job = await self.store.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
            if job.terminal or job.status is JobStatus.CANCELING:
                return JobView(job, None)
            try:
                changed = await self.store.transition(
                    job_id, Event.CANCEL, expect=job.status, now=self._clock()
                )
            except Conflict:
                continue  # the status moved under us; read it again
            log.info(
                "job cancel requested",
                extra={"action": "job_cancel", "job_id": job_id, "status": changed.status.value},
            )
            return JobView(changed, None)
        raise Conflict(f"job {job_id} kept changing; retry the cancel")

    async def cancel_queued(self, job_id: str) -> bool:
        """Cancel the job if it is queued; whether this call canceled it (one that another
        cancel, a claim or anything else moved on first is not)."""
        try:
            await self.store.transition(
                job_id, Event.CANCEL, expect=JobStatus.QUEUED, now=self._clock()
            )
        except (Conflict, NotFound):
            return False
        log.info(
            "job cancel requested",
            extra={"action": "job_cancel", "job_id": job_id, "status": JobStatus.CANCELED.value},
        )
        return True

    async def delete(self, job_id: str) -> None:
        """Delete a finished job, its events and its files."""
        job = await self.store.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        if not job.terminal:
            raise Conflict(
                f"job {job_id} is {job.status.value}; cancel it and wait until it ends first",
                details={"status": job.status.value},
            )
        if self._files is not None:
            await self._files.delete_prefix(job_prefix(job_id))
        self.finished.forget(job_id)
        await self.store.delete(job_id)

    # operations -----------------------------------------------------------------------------

    async def queue_remaining(self, *, fresh: bool = True) -> int:
        """Jobs queued or running (an API key's own, in its view), as ComfyUI's
        `queue_remaining` reports it: see comfyrun.queue_remaining (unless `fresh`, a count
        up to REMAINING_TTL_S old stands in; every /ws client is told at each prompt's start)."""
        return await self._remaining_count().get(fresh=fresh)

    def queue_remaining_now(self, *, fresh: bool = True) -> int | None:
        """`queue_remaining` where it needs no wait (RemainingCount.now), else None."""
        return self._remaining_count().now(fresh=fresh)

    def _remaining_count(self) -> RemainingCount:
        counter = self._remaining.get(self._key_scope)  # a key's own jobs (its store's view)
        if counter is None:
            counter = RemainingCount(self._count_remaining, count_now=self._count_remaining_now)
            self._remaining[self._key_scope] = counter
        return counter

    async def _count_remaining(self) -> int:
        return _unfinished(await self.store.counts(unfinished=True))

    def _count_remaining_now(self) -> int | None:
        counts = self.store.counts_now(unfinished=True)
        return None if counts is None else _unfinished(counts)

    async def stats(self) -> Stats:
        counts = await self.store.counts()
        oldest = await self.store.oldest_queued_at()
        now = self._clock()
        return Stats(
            counts={s.value: counts.get(s, 0) for s in JobStatus},
            queue_depth=counts.get(JobStatus.QUEUED, 0),
            running=counts.get(JobStatus.RUNNING, 0) + counts.get(JobStatus.CANCELING, 0),
            oldest_queued_age_s=None if oldest is None else max(0.0, now - oldest),
        )

    async def cleanup(self, max_age_hours: float | None = None) -> CleanupResult:
        """Expire finished jobs past their retention, and delete those finished more than
        `max_age_hours` ago (default: the retention) with their files."""
        now = self._clock()
        expired = cast("Sequence[Job]", await self.store.expire_finished(now=now))
        hours = self.settings.retention_hours if max_age_hours is None else max_age_hours
        # (cast: mypy reads `list` inside JobStore as its method of that name)
        deleted = cast(
            "Sequence[Job]", await self.store.delete_finished_before(now - hours * 3600.0)
        )
        for job in (*expired, *deleted):
            self.finished.forget(job.id)  # what was kept at hand changed
        files = 0
        if self._files is not None:
            for job in deleted:
                files += await self._files.delete_prefix(job_prefix(job.id))
        log.info(
            "cleanup",
            extra={"action": "cleanup", "expired": len(expired), "deleted": len(deleted)},
        )
        return CleanupResult(expired=len(expired), deleted=len(deleted), files_deleted=files)

    async def reset_stuck(self, max_running_hours: float) -> Sequence[Job]:
        """Running jobs started more than `max_running_hours` ago go back to the queue."""
        jobs = cast(
            "Sequence[Job]",
            await self.store.requeue_stuck(max_running_hours * 3600.0, now=self._clock()),
        )
        for job in jobs:
            log.info("job requeued", extra={"action": "job_reset_stuck", "job_id": job.id})
        return jobs

    async def ready(self) -> bool:
        return await self.store.ping()


def _unfinished(counts: Mapping[JobStatus, int]) -> int:
    """Jobs queued or running, of a store's `counts`."""
    return sum(counts.get(s, 0) for s in (JobStatus.QUEUED, *ACTIVE))


__all__ = ["REMAINING_TTL_S", "CleanupResult", "FileDeleter", "JobAdmin", "Stats"]
