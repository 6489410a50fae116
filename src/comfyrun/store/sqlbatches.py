"""The SQL stores' batches (mixed into SQLStore): a batch's jobs queued together, canceled
together, and the batch ended (with its webhook in the outbox) when its last job is."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from comfyrun.core.batch import Batch, BatchStatus, NewBatch
from comfyrun.core.job import Job, JobStatus, NewJob
from comfyrun.core.webhook import batch_delivery_for
from comfyrun.store import batches, tenancy, transition
from comfyrun.store.base import JobPage, QueueMove, clock_or
from comfyrun.store.codec import (
    batch_from_row,
    batch_to_row,
    dump_json,
    job_from_row,
    job_page,
    job_to_row,
    page_params,
)
from comfyrun.store.sqldialect import SQLDialect


class SQLBatches(SQLDialect):
    if TYPE_CHECKING:  # SQLTenancy's

        async def _admit(self, conn: Any, new: NewJob, now: float, *, count: int = 1) -> None: ...

    async def create_batch(
        self, batch: NewBatch, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Batch:
        now = clock_or(now)
        async with self._write() as conn:
            if jobs:  # a key's batch fits its quota, every job of it, or none is queued
                await self._admit(conn, jobs[0], now, count=len(jobs))
            priority = jobs[0].priority if jobs else 0
            head = await self._one(conn, "fair_head", {"priority": priority, "now": now})
            start = batches.first_tag(head["tag"] if head else None)
            record, queued = batches.created(batch, jobs, now, start)
            await self._run(conn, "insert_batch", batch_to_row(record))
            if queued:
                await self._insert_jobs(conn, [job_to_row(j) for j in queued])
                event = dump_json(transition.enqueue_event(queued[0]))
                await self._run_many(
                    conn,
                    "insert_event_quiet",
                    [
                        {"job_id": j.id, "kind": "status", "data": event, "created_at": now}
                        for j in queued
                    ],
                )
            data = {"total": record.total, "workflow": record.workflow}
            await self._append(conn, record.id, batches.CREATED_EVENT, data, now, True)
        await self._committed(record.id, work=True, moved=QueueMove.JOINED)  # (its jobs)
        return record

    async def get_batch(self, batch_id: str) -> Batch | None:
        async with self._read() as conn:
            row = await self._one(conn, "get_batch", {"id": batch_id})
        return batch_from_row(row) if row else None

    async def open_batches(self) -> builtins.list[Batch]:
        async with self._read() as conn:
            return [batch_from_row(r) for r in await self._all(conn, "open_batches", {})]

    async def batch_counts(self, batch_id: str) -> dict[JobStatus, int]:
        async with self._read() as conn:
            return await self._batch_counts(conn, batch_id)

    async def batch_jobs(
        self, batch_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        params = {"id": batch_id, **page_params(cursor, limit)}
        async with self._read() as conn:
            return job_page(await self._all(conn, "batch_jobs", params), limit)

    async def cancel_batch(
        self, batch_id: str, *, now: float | None = None
    ) -> tuple[Batch, builtins.list[Job]]:
        now = clock_or(now)
        async with self._write() as conn:
            row = await self._one(conn, "get_batch", {"id": batch_id})
            if row is None:
                raise batches.not_found(batch_id)
            if batch_from_row(row).done:
                return batch_from_row(row), []
            # the jobs first, then the batch row: the order a job's own transition locks them
            canceled = await self._all(conn, "cancel_batch_queued", {"id": batch_id, "now": now})
            owner = batch_from_row(row).owner
            if owner is not None and canceled:  # its key's jobs: out of its unfinished count
                params = {"id": owner, "seconds": 0.0, "ended": len(canceled)}
                await self._run(conn, "settle_key", params)
            await self._run_many(
                conn,
                "insert_event_many",
                [
                    {
                        "job_id": r["id"],
                        "kind": "status",
                        "data": dump_json(batches.cancel_event(int(r["attempts"]))),
                        "created_at": now,
                        **self._notify_params(str(r["id"])),
                    }
                    for r in canceled
                ],
            )
            batch = batch_from_row(await self._one(conn, "lock_batch", {"id": batch_id}) or row)
            if batch.status is BatchStatus.RUNNING:
                params = {
                    "id": batch_id,
                    "status": BatchStatus.CANCELING.value,
                    "expect": batch.status.value,
                    "finished_at": None,
                }
                await self._run(conn, "set_batch_status", params)
            await self._end_batch_if_done(conn, batch_id, now)
            active = [
                job_from_row(r)
                for r in await self._all(conn, "batch_active_jobs", {"id": batch_id})
            ]
            batch = batch_from_row(await self._one(conn, "get_batch", {"id": batch_id}) or row)
        for r in canceled:
            await self._committed(str(r["id"]), moved=QueueMove.ENDED)
        await self._committed(batch_id)
        return batch, active

    async def _batch_counts(self, conn: Any, batch_id: str) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for r in await self._all(conn, "batch_counts", {"id": batch_id}):
            counts[JobStatus(r["status"])] = int(r["n"])
        return counts

    async def _end_batch_if_done(self, conn: Any, batch_id: str, now: float) -> bool:
        """Inside a write: end the batch if none of its jobs is open any more (once: the batch
        row is locked while looking)."""
        row = await self._one(conn, "lock_batch", {"id": batch_id})
        if row is None:
            return False
        batch = batch_from_row(row)
        if batch.done:
            return False
        open_row = await self._one(conn, "batch_open_jobs", {"id": batch_id})
        status = batches.ending(batch.status, int(open_row["n"]) if open_row else 0)
        if status is None:
            return False
        params = {
            "id": batch_id,
            "status": status.value,
            "expect": batch.status.value,
            "finished_at": now,
        }
        await self._run(conn, "set_batch_status", params)
        counts = await self._batch_counts(conn, batch_id)
        data = batches.completed_event(batch, status, counts)
        await self._append(conn, batch_id, batches.COMPLETED_EVENT, data, now)
        delivery = batch_delivery_for(batch_id, batch.options, now)
        if delivery is not None:  # in the outbox with the batch's end: nothing lost in a crash
            await self._run(conn, "insert_delivery", tenancy.delivery_to_row(delivery))
        return True
