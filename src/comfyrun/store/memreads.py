"""The memory store's reads (mixed into MemoryStore, store.memory): a job, the listings, the
queue and a place in it, the counts. The SQL stores' semantics (store.sqlreads)."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from typing import Any

from comfyrun.core.job import ACTIVE, TERMINAL, Job, JobStatus
from comfyrun.store.base import (
    COMFY_CLIENT_ID,
    JobEnd,
    JobPage,
    JobStamp,
    QueueEntry,
    clock_or,
)
from comfyrun.store.codec import decode_cursor, encode_cursor, queue_entry_of
from comfyrun.store.retrying import in_retry


class MemoryReads:
    """Reads over the jobs MemoryStore keeps (it sets `_jobs`)."""

    _jobs: dict[str, Job]

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.prompt_id == prompt_id), None)

    async def unfinished_for_client(
        self, client_id: str, *, owner: str | None = None, limit: int = 500
    ) -> list[Job]:
        jobs = [
            j
            for j in self._jobs.values()
            if (j.status is JobStatus.QUEUED or j.status in ACTIVE)
            and j.metadata.get(COMFY_CLIENT_ID) == client_id
            and (owner is None or j.owner == owner)
        ]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[: max(0, limit)]

    async def queue(
        self, *, owner: str | None = None, limit: int = 1000, bodies: bool = True
    ) -> list[QueueEntry]:
        mine = [j for j in self._jobs.values() if owner is None or j.owner == owner]
        active = sorted(
            (j for j in mine if j.status in ACTIVE), key=lambda j: (j.started_at or 0.0, j.id)
        )
        queued = sorted((j for j in mine if j.status is JobStatus.QUEUED), key=claim_order)
        limit = max(0, limit)
        listed = [queue_entry_of(j) for j in active[:limit]]
        if bodies:
            return listed + [queue_entry_of(j) for j in queued[:limit]]
        return listed + [dataclasses.replace(queue_entry_of(j), raw=None) for j in queued[:limit]]

    async def queue_bodies(
        self, job_ids: Sequence[str], *, owner: str | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        return {
            i: (j.workflow, dict(j.options), dict(j.metadata))
            for i in job_ids
            if (j := self._jobs.get(i)) is not None and (owner is None or j.owner == owner)
        }

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        if statuses is not None:
            wanted = set(statuses)
            jobs = [j for j in jobs if j.status in wanted]
        if owner is not None:
            jobs = [j for j in jobs if j.owner == owner]
        if cursor is not None:
            after = decode_cursor(cursor)
            jobs = [j for j in jobs if (j.created_at, j.id) < after]
        return page_of(jobs, limit)

    async def stamps(
        self, *, statuses: Sequence[JobStatus], owner: str | None = None, limit: int = 1000
    ) -> builtins.list[JobStamp]:
        page = await self.list(statuses=statuses, owner=owner, limit=max(0, limit))
        return [stamp_of(j) for j in page.jobs]

    async def get_many(self, job_ids: Sequence[str]) -> builtins.list[Job]:
        return [self._jobs[i] for i in dict.fromkeys(job_ids) if i in self._jobs]

    async def queue_position(
        self,
        job_id: str,
        *,
        now: float | None = None,
        limit: int | None = None,
        job: Job | None = None,
    ) -> int | None:
        now = clock_or(now)
        if job is None or job.id != job_id:
            job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return None
        mine = _position_order(job, now)
        ahead = sum(
            1
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED and _position_order(j, now) < mine
        )
        return ahead if limit is None else min(ahead, max(0, limit))

    async def retrying(self, *, owner: str | None = None) -> int:
        return sum(
            1 for j in self._jobs.values() if in_retry(j) and (owner is None or j.owner == owner)
        )

    async def counts(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        return self.counts_now(unfinished=unfinished, owner=owner)

    def counts_now(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for job in self._jobs.values():
            if (not unfinished or job.status not in TERMINAL) and (
                owner is None or job.owner == owner
            ):
                counts[job.status] += 1
        return counts

    async def finished_since(self, after: float, *, limit: int = 1000) -> builtins.list[JobEnd]:
        ended = sorted(
            (j.finished_at, j.id, j)
            for j in self._jobs.values()
            if j.finished_at is not None and j.finished_at >= after
        )
        return [
            JobEnd(job.id, job.status, job.created_at, job.started_at, at)
            for at, _, job in ended[: max(0, limit)]
        ]

    async def oldest_queued_at(self, *, owner: str | None = None) -> float | None:
        return min(
            (
                j.created_at
                for j in self._jobs.values()
                if j.status is JobStatus.QUEUED and (owner is None or j.owner == owner)
            ),
            default=None,
        )


def page_of(jobs: builtins.list[Job], limit: int) -> JobPage:
    """The first `limit` of `jobs` (in listing order), with the cursor to the rest."""
    page = jobs[: max(0, limit)]
    last = page[-1] if page and len(jobs) > len(page) else None
    return JobPage(jobs=page, next_cursor=encode_cursor(last.created_at, last.id) if last else None)


def claim_order(job: Job) -> tuple[int, float, float, str]:
    return (-job.priority, job.fair_tag, job.rank_at, job.id)


def _position_order(job: Job, now: float) -> tuple[bool, int, float, float, str]:
    """Claim order as of `now`: runnable jobs first, then those waiting for next_run_at."""
    return (job.next_run_at > now, -job.priority, job.fair_tag, job.rank_at, job.id)


__all__ = ["MemoryReads", "claim_order", "page_of"]


def stamp_of(job: Job) -> JobStamp:
    return JobStamp(job.id, job.status, job.created_at, job.finished_at, job.attempts)
