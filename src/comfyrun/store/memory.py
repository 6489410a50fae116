"""An in-memory JobStore (`memory://`): the same semantics as the SQL stores, for tests of the
other parts and for a throwaway single-process server. Nothing survives `close()`.

All methods run on the event loop without awaiting inside a mutation, so each one is atomic;
waiters are woken through asyncio conditions, never by polling (store.memevents). Its reads,
batches, keys, workers registry and node catalogs are the other mixins.
"""

from __future__ import annotations

import builtins
import heapq
import time
from collections.abc import Sequence
from types import TracebackType

from comfyrun.core.batch import NO_GROUP, Batch, fair_tag
from comfyrun.core.job import ACTIVE, TERMINAL, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IdempotencyKeyReuse, NotFound
from comfyrun.store import maintenance, transition
from comfyrun.store.base import (
    Changes,
    ClaimChoice,
    ClaimNote,
    HandOff,
    JobStamp,
    clock_or,
)
from comfyrun.store.codec import (
    output_to_dict,
    progress_to_dict,
)
from comfyrun.store.idempotency import KeyVerdict, key_scope, verdict
from comfyrun.store.membatches import MemoryBatches
from comfyrun.store.memcatalogs import MemoryCatalogs
from comfyrun.store.memevents import MemoryEvents
from comfyrun.store.memreads import MemoryReads, claim_order
from comfyrun.store.memtenancy import MemoryTenancy
from comfyrun.store.memworkers import MemoryWorkers
from comfyrun.store.replacing import as_read, changed
from comfyrun.store.replacing import check as replacing_check


class MemoryStore(
    MemoryEvents, MemoryReads, MemoryBatches, MemoryTenancy, MemoryWorkers, MemoryCatalogs
):
    """A JobStore held in dicts."""

    def __init__(self) -> None:
        MemoryEvents.__init__(self)
        MemoryTenancy.__init__(self)
        MemoryWorkers.__init__(self)
        MemoryCatalogs.__init__(self)
        self._jobs: dict[str, Job] = {}
        self._keys: dict[tuple[str, str], tuple[str, str | None, float]] = {}
        self._batches: dict[str, Batch] = {}

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._jobs.clear()
        self._events.clear()
        self._keys.clear()
        self._batches.clear()
        self._catalogs.clear()

    async def ping(self) -> bool:
        return True

    async def can_commit(self) -> str | None:
        return None

    # -- the queue ---------------------------------------------------------------------------

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        job, created = self._enqueue(new, clock_or(now), replacing)
        if created:
            await self._wake_workers()
            await self._wake_watchers()
        return job, created

    async def enqueue_counted(
        self,
        new: NewJob,
        *,
        limit: int | None = None,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool, int | None]:
        now = clock_or(now)
        job, created = await self.enqueue(new, now=now, replacing=replacing)
        return job, created, await self.queue_position(job.id, now=now, limit=limit, job=job)

    async def enqueue_claimed(
        self,
        new: NewJob,
        hand_off: HandOff,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        now = clock_or(now)
        handing = not any(j.status is JobStatus.QUEUED for j in self._jobs.values())
        job, created = self._enqueue(new, now, replacing)
        if not created:
            return job, False
        if handing:
            job = self._take(job, hand_off.worker_id, hand_off.lease_s, now, hand_off.note)
        else:
            await self._wake_workers()
        await self._wake_watchers()
        return job, True

    def _enqueue(
        self, new: NewJob, now: float, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        """Store `new` (no await: atomic); `replacing` (store.replacing): the finished job it
        replaces, checked before anything changes and deleted as `new` is stored."""
        if replacing is not None:
            replacing_check(new, replacing)
        if new.idempotency_key is not None:
            key = (key_scope(new), new.idempotency_key)
            job_id, stored_hash, stored_at = self._keys.get(key, (None, None, None))
            v = verdict(
                stored_hash=stored_hash,
                stored_at=stored_at,
                request_hash=new.request_hash,
                now=now,
            )
            existing = self._jobs.get(job_id) if job_id else None
            if v is KeyVerdict.REUSED:
                raise IdempotencyKeyReuse(details={"idempotency_key": new.idempotency_key})
            if v is KeyVerdict.SAME and existing is not None:
                return existing, False
        if replacing is not None:
            if not as_read(self._jobs.get(new.id), replacing):
                raise changed(replacing)
            self._admit_replacing(new, now)
        elif new.id in self._jobs:
            raise Conflict(f"job {new.id} already exists", details={"job_id": new.id})
        else:
            self._admit(new, now)
        if new.idempotency_key is not None:
            self._keys[(key_scope(new), new.idempotency_key)] = (new.id, new.request_hash, now)
        job = transition.enqueued(new, now)
        job = job.evolve(fair_tag=self._fair_tag(job, now))
        self._jobs[job.id] = job
        self._append(job.id, "status", transition.enqueue_event(job), now)
        return job, True

    async def claim(
        self,
        worker_id: str,
        lease_s: float,
        *,
        now: float | None = None,
        note: ClaimNote | None = None,
        choice: ClaimChoice | None = None,
        types: Sequence[str] | None = None,
    ) -> Job | None:
        now = clock_or(now)
        runnable = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED
            and j.next_run_at <= now
            and (types is None or j.type in types)
        ]
        if not runnable:
            return None
        if choice is not None:
            window = heapq.nsmallest(max(1, choice.window), runnable, key=claim_order)
            chosen = choice.chosen(window)
            if chosen is None:
                return None
            best = chosen
        else:
            best = min(runnable, key=claim_order)
        job = self._take(best, worker_id, lease_s, now, note)
        await self._wake_watchers()
        return job

    def _admit_replacing(self, new: NewJob, now: float) -> None:
        """`_admit` with the finished job `new` replaces gone (not counted: the SQL stores
        delete it first in their transaction), put back if `new` is refused."""
        old, events = self._jobs.pop(new.id), self._events.pop(new.id, None)
        try:
            self._admit(new, now)
        except BaseException:
            self._jobs[new.id] = old
            if events is not None:
                self._events[new.id] = events
            raise

    def _take(
        self, job: Job, worker_id: str, lease_s: float, now: float, note: ClaimNote | None
    ) -> Job:
        """The claim of queued `job` for `worker_id`, with its events."""
        job = transition.claimed(job, worker_id, lease_s, now)
        self._jobs[job.id] = job
        self._append(job.id, "status", transition.claim_event(job), now)
        extra = note.of(job) if note is not None else None
        if extra is not None:
            self._append(job.id, extra[0], extra[1], now)
        return job

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.status not in ACTIVE or job.worker_id != worker_id:
            return False
        self._jobs[job_id] = job.evolve(lease_expires_at=clock_or(now) + lease_s)
        return True

    async def transition(
        self,
        job_id: str,
        event: Event,
        *,
        expect: JobStatus,
        changes: Changes | None = None,
        now: float | None = None,
        worker_id: str | None = None,
    ) -> Job:
        now = clock_or(now)
        p = transition.plan(expect, event, changes, now)
        job = self._get_or_raise(job_id)
        if job.status is not expect or (worker_id is not None and job.worker_id != worker_id):
            raise transition.moved(job, expect, worker_id)
        if not p.changes_status:
            return job
        outputs = changes.outputs if changes is not None else ()
        if outputs:
            job = job.evolve(outputs=(*job.outputs, *outputs))
            for output in outputs:
                self._append(job_id, "output", output_to_dict(output), now)
        job = transition.apply(job, p)
        self._jobs[job_id] = job
        self._append(job_id, "status", transition.status_event(job, p), now)
        self._settle(job, p, now)
        if job.terminal and job.batch_id is not None:
            self._end_batch_if_done(job.batch_id, now)
        if job.status is JobStatus.QUEUED:
            await self._wake_workers()
        await self._wake_watchers()
        return job

    async def record_placement(
        self,
        job_id: str,
        worker_id: str,
        *,
        backend: str,
        prompt_id: str,
        execution_started_at: float | None,
    ) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.worker_id != worker_id or job.status not in ACTIVE:
            return False
        self._jobs[job_id] = job.evolve(
            backend=backend, prompt_id=prompt_id, execution_started_at=execution_started_at
        )
        await self._wake_watchers()
        return True

    async def next_priority(
        self, *, now: float | None = None, types: Sequence[str] | None = None
    ) -> int | None:
        now = clock_or(now)
        runnable = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED
            and j.next_run_at <= now
            and (types is None or j.type in types)
        ]
        return min(runnable, key=claim_order).priority if runnable else None

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        job = self._get_or_raise(job_id)
        self._jobs[job_id] = job.evolve(progress=progress)
        self._append(job_id, "progress", progress_to_dict(progress), time.time())
        await self._wake_watchers()

    async def add_output(self, job_id: str, output: Output) -> Job:
        job = self._get_or_raise(job_id)
        job = job.evolve(outputs=(*job.outputs, output))
        self._jobs[job_id] = job
        self._append(job_id, "output", output_to_dict(output), time.time())
        await self._wake_watchers()
        return job

    # -- housekeeping ------------------------------------------------------------------------

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        now = clock_or(now)
        lost = [
            j
            for j in self._jobs.values()
            if j.status in ACTIVE and j.lease_expires_at is not None and j.lease_expires_at < now
        ]
        return await maintenance.apply_each(
            self,
            lost,
            lambda j: maintenance.lease_lost_step(j, now),
            now=now,
            action="lease_lost",
        )

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        now = clock_or(now)
        stuck = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.RUNNING
            and j.started_at is not None
            and j.started_at < now - older_than_s
        ]
        return await maintenance.apply_each(
            self, stuck, maintenance.requeue_step, now=now, action="requeue_stuck"
        )

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        now = clock_or(now)
        due = [
            j
            for j in self._jobs.values()
            if j.status in TERMINAL
            and j.status is not JobStatus.EXPIRED
            and j.expires_at is not None
            and j.expires_at <= now
        ]
        return await maintenance.apply_each(
            self, due, maintenance.expire_step, now=now, action="expire"
        )

    async def delete(self, job_id: str) -> bool:
        self._events.pop(job_id, None)
        return self._jobs.pop(job_id, None) is not None

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        old = [
            j
            for j in self._jobs.values()
            if j.status in TERMINAL and j.finished_at is not None and j.finished_at < cutoff
        ]
        for job in old:
            await self.delete(job.id)
        for batch in builtins.list(self._batches.values()):
            if batch.done and batch.finished_at is not None and batch.finished_at < cutoff:
                del self._batches[batch.id]
                self._events.pop(batch.id, None)
        return old

    def _fair_tag(self, job: Job, now: float) -> float:
        same = [
            j
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED and j.priority == job.priority
        ]
        runnable = [j for j in same if j.next_run_at <= now]
        head = min(runnable, key=claim_order).fair_tag if runnable else None
        mine = [j.fair_tag for j in same if j.fair_key == job.fair_key != NO_GROUP]
        return fair_tag(head, max(mine) if mine else None)

    # -- internals ---------------------------------------------------------------------------

    def _get_or_raise(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        return job


__all__ = ["MemoryStore"]
