"""The store as a caller that is not an admin sees it (who is calling is api.auth).

`OwnedStore` is the store seen by a key that is not an admin: its submissions carry its id as
their owner, and another owner's jobs and webhook deliveries do not exist for it. Every dialect
reads and writes through it, so each one answers another owner's things with its own 404.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from comfyrun.core.batch import Batch, NewBatch
from comfyrun.core.catalog import NodeCatalog
from comfyrun.core.job import JSON, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.core.tenancy import ApiKey, Principal, Scope
from comfyrun.core.webhook import Attempt, Delivery
from comfyrun.errors import Forbidden, NotFound
from comfyrun.store.base import (
    Changes,
    ClaimChoice,
    ClaimNote,
    HandOff,
    JobEnd,
    JobEvent,
    JobPage,
    JobStamp,
    JobStore,
    QueueEntry,
    QueueMove,
)


class OwnedStore:
    """`inner` as the key `owner` sees it (a JobStore)."""

    def __init__(self, inner: JobStore, principal: Principal) -> None:
        assert principal.owner is not None
        self.inner = inner
        self.owner: str = principal.owner
        self.may_submit = principal.may(Scope.SUBMIT)

    def _mine(self, job: Job | None) -> Job | None:
        return job if job is not None and job.owner == self.owner else None

    # the queue as this owner sees it ---------------------------------------------------------

    def _owned(self, new: NewJob) -> NewJob:
        if not self.may_submit:
            raise Forbidden("this key may not submit jobs (it lacks the submit scope)")
        return dataclasses.replace(new, owner=self.owner)

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        return await self.inner.enqueue(self._owned(new), now=now, replacing=replacing)

    async def enqueue_counted(
        self,
        new: NewJob,
        *,
        limit: int | None = None,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool, int | None]:
        return await self.inner.enqueue_counted(
            self._owned(new), limit=limit, now=now, replacing=replacing
        )

    async def enqueue_claimed(
        self,
        new: NewJob,
        hand_off: HandOff,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        return await self.inner.enqueue_claimed(
            self._owned(new), hand_off, now=now, replacing=replacing
        )

    async def get(self, job_id: str) -> Job | None:
        return self._mine(await self.inner.get(job_id))

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None:
        return self._mine(await self.inner.get_by_prompt_id(prompt_id))

    async def unfinished_for_client(
        self, client_id: str, *, owner: str | None = None, limit: int = 500
    ) -> list[Job]:
        return await self.inner.unfinished_for_client(client_id, owner=self.owner, limit=limit)

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return await self.inner.list(
            statuses=statuses, owner=self.owner, limit=limit, cursor=cursor
        )

    async def queue(
        self, *, owner: str | None = None, limit: int = 1000, bodies: bool = True
    ) -> builtins.list[QueueEntry]:
        return await self.inner.queue(owner=self.owner, limit=limit, bodies=bodies)

    async def queue_bodies(
        self, job_ids: Sequence[str], *, owner: str | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        return await self.inner.queue_bodies(job_ids, owner=self.owner)

    async def delete(self, job_id: str) -> bool:
        return await self.get(job_id) is not None and await self.inner.delete(job_id)

    async def deliveries(self, job_id: str) -> builtins.list[Delivery]:
        if await self.get(job_id) is None:
            return []
        return await self.inner.deliveries(job_id)

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
        if await self.get(job_id) is None:
            raise _gone(job_id)
        return await self.inner.transition(
            job_id, event, expect=expect, changes=changes, now=now, worker_id=worker_id
        )

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]:
        if await self.get(job_id) is None:
            return []
        return await self.inner.events_since(job_id, after_id)

    async def wait_for_event(
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]:
        return await self.inner.wait_for_event(job_id, after_id, timeout, ending=ending, held=held)

    async def wait_for_end(
        self, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        return await self.inner.wait_for_end(job_id, timeout, owner=self.owner)

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        if await self.get(job_id) is None:
            raise _gone(job_id)
        return await self.inner.append_event(job_id, kind, data)

    # batches: this owner's only ----------------------------------------------------------------

    async def create_batch(
        self, batch: NewBatch, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Batch:
        if not self.may_submit:
            raise Forbidden("this key may not submit jobs (it lacks the submit scope)")
        mine = [dataclasses.replace(job, owner=self.owner) for job in jobs]
        return await self.inner.create_batch(
            dataclasses.replace(batch, owner=self.owner), mine, now=now
        )

    async def get_batch(self, batch_id: str) -> Batch | None:
        batch = await self.inner.get_batch(batch_id)
        return batch if batch is not None and batch.owner == self.owner else None

    async def open_batches(self) -> builtins.list[Batch]:
        return [b for b in await self.inner.open_batches() if b.owner == self.owner]

    async def batch_counts(self, batch_id: str) -> dict[JobStatus, int]:
        if await self.get_batch(batch_id) is None:
            return dict.fromkeys(JobStatus, 0)
        return await self.inner.batch_counts(batch_id)

    async def batch_jobs(
        self, batch_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        if await self.get_batch(batch_id) is None:
            return JobPage(jobs=[], next_cursor=None)
        return await self.inner.batch_jobs(batch_id, limit=limit, cursor=cursor)

    async def cancel_batch(
        self, batch_id: str, *, now: float | None = None
    ) -> tuple[Batch, builtins.list[Job]]:
        if await self.get_batch(batch_id) is None:
            raise NotFound(f"batch {batch_id} not found", details={"batch_id": batch_id})
        return await self.inner.cancel_batch(batch_id, now=now)

    # unchanged: what the whole queue does, or what only workers and admins call ---------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def can_commit(self) -> str | None:
        return await self.inner.can_commit()

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
        return await self.inner.claim(
            worker_id, lease_s, now=now, note=note, choice=choice, types=types
        )

    async def announce_worker(
        self, worker_id: str, types: Sequence[str], *, now: float | None = None
    ) -> None:
        await self.inner.announce_worker(worker_id, types, now=now)

    async def retire_worker(self, worker_id: str) -> None:
        await self.inner.retire_worker(worker_id)

    async def served_types(self, *, since: float) -> builtins.set[str]:
        return await self.inner.served_types(since=since)

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        return await self.inner.renew(job_id, worker_id, lease_s, now=now)

    async def record_placement(
        self,
        job_id: str,
        worker_id: str,
        *,
        backend: str,
        prompt_id: str,
        execution_started_at: float | None,
    ) -> bool:
        return await self.inner.record_placement(
            job_id,
            worker_id,
            backend=backend,
            prompt_id=prompt_id,
            execution_started_at=execution_started_at,
        )

    async def next_priority(
        self, *, now: float | None = None, types: Sequence[str] | None = None
    ) -> int | None:
        return await self.inner.next_priority(now=now, types=types)

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        await self.inner.record_progress(job_id, progress)

    async def add_output(self, job_id: str, output: Output) -> Job:
        return await self.inner.add_output(job_id, output)

    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        await self.inner.wait_for_work(timeout, since=since, types=types)

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        return self.inner.work_token(types)

    def watch_new_work(self, heard: Callable[[str, str | None], None]) -> Callable[[], None]:
        return self.inner.watch_new_work(heard)  # ids only: a job is read through the key

    def watch_queue(self, heard: Callable[[str, QueueMove], None]) -> Callable[[], None]:
        return self.inner.watch_queue(heard)  # every key's: the watcher counts its own

    async def queue_position(
        self,
        job_id: str,
        *,
        now: float | None = None,
        limit: int | None = None,
        job: Job | None = None,
    ) -> int | None:
        return await self.inner.queue_position(job_id, now=now, limit=limit, job=job)

    async def counts(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        return await self.inner.counts(unfinished=unfinished, owner=self.owner)

    def counts_now(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int] | None:
        return self.inner.counts_now(unfinished=unfinished, owner=self.owner)

    async def retrying(self, *, owner: str | None = None) -> int:
        return await self.inner.retrying(owner=self.owner)

    async def oldest_queued_at(self, *, owner: str | None = None) -> float | None:
        return await self.inner.oldest_queued_at(owner=self.owner)

    async def stamps(
        self, *, statuses: Sequence[JobStatus], owner: str | None = None, limit: int = 1000
    ) -> builtins.list[JobStamp]:
        return await self.inner.stamps(statuses=statuses, owner=self.owner, limit=limit)

    async def get_many(self, job_ids: Sequence[str]) -> builtins.list[Job]:
        return [j for j in await self.inner.get_many(job_ids) if j.owner == self.owner]

    async def finished_since(self, after: float, *, limit: int = 1000) -> builtins.list[JobEnd]:
        return await self.inner.finished_since(after, limit=limit)  # the fleet's (metrics)

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        return await self.inner.sweep_expired_leases(now=now)

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        return await self.inner.requeue_stuck(older_than_s, now=now)

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        return await self.inner.expire_finished(now=now)

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        return await self.inner.delete_finished_before(cutoff)

    async def put_catalog(self, catalog: NodeCatalog) -> bool:
        return await self.inner.put_catalog(catalog)

    async def catalogs(self) -> builtins.list[NodeCatalog]:
        return await self.inner.catalogs()

    async def catalog_stamps(self) -> dict[str, float]:
        return await self.inner.catalog_stamps()

    async def delete_catalog(self, backend: str) -> bool:
        return await self.inner.delete_catalog(backend)

    async def create_api_key(self, key: ApiKey) -> None:
        raise Forbidden("only admin keys manage keys")

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return await self.inner.get_api_key(key_id) if key_id == self.owner else None

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self.inner.api_key_by_hash(key_hash)

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        key = await self.get_api_key(self.owner)
        return [key] if key is not None else []

    async def revoke_api_key(self, key_id: str, *, now: float | None = None) -> bool:
        raise Forbidden("only admin keys manage keys")

    async def claim_deliveries(
        self, holder: str, lease_s: float, *, limit: int = 10, now: float | None = None
    ) -> builtins.list[Delivery]:
        return await self.inner.claim_deliveries(holder, lease_s, limit=limit, now=now)

    async def record_attempt(
        self,
        delivery_id: str,
        holder: str,
        attempt: Attempt,
        *,
        next_attempt_at: float | None,
        payload: str | None = None,
    ) -> Delivery | None:
        return await self.inner.record_attempt(
            delivery_id, holder, attempt, next_attempt_at=next_attempt_at, payload=payload
        )

    async def delivery_counts(self) -> dict[str, int]:
        return await self.inner.delivery_counts()

    async def prune_deliveries(self, before: float) -> int:
        return await self.inner.prune_deliveries(before)


def _gone(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} not found", details={"job_id": job_id})


__all__ = ["OwnedStore"]
