"""The memory store's batches (mixed into MemoryStore, store.memory): created with their jobs,
read, canceled, and ended when their last job ends. The SQL stores' semantics
(store.sqlbatches)."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from comfyrun.core.batch import Batch, BatchStatus, NewBatch
from comfyrun.core.job import ACTIVE, JSON, Job, JobStatus, NewJob
from comfyrun.core.webhook import batch_delivery_for
from comfyrun.errors import Conflict
from comfyrun.store import batches, transition
from comfyrun.store.base import JobEvent, JobPage, clock_or
from comfyrun.store.codec import decode_cursor
from comfyrun.store.memreads import claim_order, page_of


class MemoryBatches(ABC):
    """Batches over the jobs MemoryStore keeps (it sets these)."""

    _jobs: dict[str, Job]
    _batches: dict[str, Batch]
    _deliveries: dict[str, Any]

    @abstractmethod
    def _append(self, job_id: str, kind: str, data: JSON, now: float) -> JobEvent: ...

    @abstractmethod
    async def _wake_watchers(self) -> None: ...

    if TYPE_CHECKING:  # MemoryTenancy's (after this class in MemoryStore's bases)

        def _admit(self, new: NewJob, now: float, *, count: int = 1) -> None: ...

        def _count_out(self, owner: str | None, ended: int) -> None: ...

    @abstractmethod
    async def _wake_workers(self) -> None: ...

    async def create_batch(
        self, batch: NewBatch, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Batch:
        now = clock_or(now)
        if batch.id in self._batches:
            raise Conflict(f"batch {batch.id} already exists", details={"batch_id": batch.id})
        if jobs:  # a key's batch fits its quota, every job of it, or none is queued
            self._admit(jobs[0], now, count=len(jobs))
        priority = jobs[0].priority if jobs else 0
        runnable = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED and j.priority == priority and j.next_run_at <= now
        ]
        head = min(runnable, key=claim_order).fair_tag if runnable else None
        record, queued = batches.created(batch, jobs, now, batches.first_tag(head))
        self._batches[record.id] = record
        for job in queued:
            self._jobs[job.id] = job
            self._append(job.id, "status", transition.enqueue_event(job), now)
        data = {"total": record.total, "workflow": record.workflow}
        self._append(record.id, batches.CREATED_EVENT, data, now)
        await self._wake_workers()
        await self._wake_watchers()
        return record

    async def get_batch(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    async def open_batches(self) -> builtins.list[Batch]:
        return sorted((b for b in self._batches.values() if not b.done), key=lambda b: b.created_at)

    async def batch_counts(self, batch_id: str) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for job in self._jobs.values():
            if job.batch_id == batch_id:
                counts[job.status] += 1
        return counts

    async def batch_jobs(
        self, batch_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        jobs = sorted(
            (j for j in self._jobs.values() if j.batch_id == batch_id),
            key=lambda j: (j.created_at, j.id),
        )
        if cursor is not None:
            after = decode_cursor(cursor)
            jobs = [j for j in jobs if (j.created_at, j.id) > after]
        return page_of(jobs, limit)

    async def cancel_batch(
        self, batch_id: str, *, now: float | None = None
    ) -> tuple[Batch, builtins.list[Job]]:
        now = clock_or(now)
        batch = self._batches.get(batch_id)
        if batch is None:
            raise batches.not_found(batch_id)
        if batch.done:
            return batch, []
        canceled = 0
        for job in builtins.list(self._jobs.values()):
            if job.batch_id == batch_id and job.status is JobStatus.QUEUED:
                self._jobs[job.id] = job.evolve(status=JobStatus.CANCELED, finished_at=now)
                self._append(job.id, "status", batches.cancel_event(job.attempts), now)
                canceled += 1
        self._count_out(batch.owner, canceled)
        if batch.status is BatchStatus.RUNNING:
            self._batches[batch_id] = batch.evolve(status=BatchStatus.CANCELING)
        self._end_batch_if_done(batch_id, now)
        active = [j for j in self._jobs.values() if j.batch_id == batch_id and j.status in ACTIVE]
        await self._wake_watchers()
        return self._batches[batch_id], active

    def _end_batch_if_done(self, batch_id: str, now: float) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        open_jobs = sum(1 for j in self._jobs.values() if j.batch_id == batch_id and not j.terminal)
        status = batches.ending(batch.status, open_jobs)
        if status is None:
            return
        self._batches[batch_id] = batch.evolve(status=status, finished_at=now)
        counts = dict.fromkeys(JobStatus, 0)
        for job in self._jobs.values():
            if job.batch_id == batch_id:
                counts[job.status] += 1
        data = batches.completed_event(batch, status, counts)
        self._append(batch_id, batches.COMPLETED_EVENT, data, now)
        delivery = batch_delivery_for(batch_id, batch.options, now)
        if delivery is not None:
            self._deliveries[delivery.id] = delivery


__all__ = ["MemoryBatches"]
