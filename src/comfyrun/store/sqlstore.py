"""What the SQLite and PostgreSQL stores share: every JobStore method written once against named
queries (`sql/<dialect>/queries.sql`); its reads of jobs are `SQLReads` (store.sqlreads), its
claims `SQLClaims` (store.sqlclaims), its events `SQLEvents` (store.sqlevents), its batches,
keys, workers registry and node catalogs the other mixins. A dialect supplies its connection
plumbing (`SQLDialect`, store.sqldialect: transactions, running a named query, appending an
event, PostgreSQL's NOTIFY there) and its waiting (declared in SQLEvents).
"""

from __future__ import annotations

import builtins
import time
from abc import abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from comfyrun.core.batch import NO_GROUP, fair_tag
from comfyrun.core.job import JSON, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IdempotencyKeyReuse, StoreError
from comfyrun.store import maintenance, transition
from comfyrun.store.base import (
    Changes,
    HandOff,
    JobStamp,
    QueueMove,
    clock_or,
    queue_move,
)
from comfyrun.store.codec import (
    dump_json,
    job_from_row,
    job_to_row,
    output_to_dict,
    progress_to_dict,
)
from comfyrun.store.idempotency import KeyVerdict, key_scope, verdict
from comfyrun.store.replacing import check as replacing_check
from comfyrun.store.replacing import remove_as_read
from comfyrun.store.sqlbatches import SQLBatches
from comfyrun.store.sqlcatalogs import SQLCatalogs
from comfyrun.store.sqlclaims import SQLClaims, claim_events
from comfyrun.store.sqldialect import Row
from comfyrun.store.sqlevents import SQLEvents
from comfyrun.store.sqlprobe import SQLWriteProbe
from comfyrun.store.sqlreads import SQLReads
from comfyrun.store.sqlretrying import SQLRetryCounts
from comfyrun.store.sqltenancy import SQLTenancy
from comfyrun.store.sqlworkers import SQLWorkers


class SQLStore(
    SQLClaims,
    SQLEvents,
    SQLWriteProbe,
    SQLRetryCounts,
    SQLCatalogs,
    SQLReads,
    SQLTenancy,
    SQLWorkers,
    SQLBatches,
):
    """A JobStore over SQL; subclasses provide the connection plumbing (SQLDialect's abstract
    methods) and the waiting."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> bool:
        try:
            async with self._read() as conn:
                await self._one(conn, "ping", {})
        except StoreError:
            return False
        return True

    # -- the queue ---------------------------------------------------------------------------

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        now = clock_or(now)
        async with self._write() as conn:
            job, created = await self._enqueue_in(conn, new, now, work=True, replacing=replacing)
        if created:
            await self._committed(
                job.id, work=True, job_type=job.type, ending=False, moved=QueueMove.JOINED
            )
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
        async with self._write() as conn:
            job, created = await self._enqueue_in(conn, new, now, work=True, replacing=replacing)
            queued = job.status is JobStatus.QUEUED
            position = await self._position_in(conn, job, now, limit) if queued else None
        if created:
            await self._committed(
                job.id, work=True, job_type=job.type, ending=False, moved=QueueMove.JOINED
            )
        return job, created, position

    async def enqueue_claimed(
        self,
        new: NewJob,
        hand_off: HandOff,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        now = clock_or(now)
        async with self._write() as conn:
            # no other job waits: the claim the worker would make next takes this one, and
            # the job is written claimed (running), not queued and then updated
            handing = await self._one(conn, "any_queued", {}) is None
            job, created = await self._enqueue_in(
                conn,
                new,
                now,
                work=not handing,
                hand_off=hand_off if handing else None,
                decided=hand_off.decided,
                replacing=replacing,
            )
        if hand_off.decided is not None and not created:  # a replay: said here
            self._decided(hand_off.decided, job, created)
        if created:
            queued = job.status is JobStatus.QUEUED
            await self._committed(
                job.id, work=queued, job_type=job.type, ending=False, moved=QueueMove.JOINED
            )
        return job, created

    async def _enqueue_in(
        self,
        conn: Any,
        new: NewJob,
        now: float,
        *,
        work: bool,
        hand_off: HandOff | None = None,
        decided: Callable[[Job, bool], None] | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        """Insert `new` queued (or find the job its idempotency key names) inside the caller's
        write transaction. `work`: the new job's event wakes workers to claim it. With
        `hand_off`, a new job is inserted as its claim takes it (running, attempts 1, leased),
        its enqueue's and claim's events logged in that order, as a claim right after would.
        `decided` (HandOff.decided) is told of a new job as soon as its row is written: what
        the transaction decided, before its events are written and before it commits.
        `replacing`: the finished job it replaces, deleted first (store.replacing)."""
        if replacing is not None:
            replacing_check(new, replacing)
        job = transition.enqueued(new, now)
        if new.idempotency_key is not None:
            key = {"scope": key_scope(new), "key": new.idempotency_key}
            await self._lock_key(conn, key)
            row = await self._one(conn, "get_key", key)
            v = verdict(
                stored_hash=row["request_hash"] if row else None,
                stored_at=row["created_at"] if row else None,
                request_hash=new.request_hash,
                now=now,
            )
            if v is KeyVerdict.REUSED:
                raise IdempotencyKeyReuse(details={"idempotency_key": new.idempotency_key})
            existing = await self._one(conn, "get", {"id": row["job_id"]}) if row else None
            if v is KeyVerdict.SAME and existing is not None:
                return job_from_row(existing), False
            bind = {"job_id": job.id, "request_hash": new.request_hash, "created_at": now}
            await self._run(conn, "bind_key", key | bind)
        if replacing is not None:  # (gone before the quota counts the owner's jobs)
            await remove_as_read(self, conn, replacing)
        await self._admit(conn, new, now)
        # a job handed off finds no job queued (enqueue_claimed looked): its tag is the empty
        # queue's, without asking for the head and its group's last
        tag = fair_tag(None, None) if hand_off is not None else await self._fair_tag(conn, job, now)
        job = job.evolve(fair_tag=tag)
        events = [("status", transition.enqueue_event(job))]
        if hand_off is not None:
            job = transition.claimed(job, hand_off.worker_id, hand_off.lease_s, now)
            events += claim_events(job, hand_off.note)  # logged with the enqueue's, at once
        if not await self._insert_job(conn, job_to_row(job)):
            raise Conflict(f"job {job.id} already exists", details={"job_id": job.id})
        if decided is not None:
            self._decided(decided, job, True)
        await self._append_all(conn, job.id, events, now, work, job.type, new=True)
        return job, True

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
        async with self._write() as conn:
            row = None
            outputs = [output_to_dict(o) for o in (changes.outputs if changes is not None else ())]
            if p.changes_status:
                params = transition.plan_params(p, job_id, worker_id)
                row = await self._transition_row(conn, params, outputs)
            if row is None:
                current = await self._one(conn, "get", {"id": job_id})
                if current is None:
                    raise transition.not_found(job_id)
                job = job_from_row(current)
                if job.status is not expect or (
                    worker_id is not None and job.worker_id != worker_id
                ):
                    raise transition.moved(job, expect, worker_id)
                return job  # a no-op transition: nothing written
            job = job_from_row(row)
            requeued = job.status is JobStatus.QUEUED
            events = [("output", data) for data in outputs]
            events.append(("status", transition.status_event(job, p)))
            await self._append_all(conn, job_id, events, now, requeued, job.type)
            await self._settle(conn, job, p, now)
            ended = job.terminal and job.batch_id is not None
            if ended and job.batch_id is not None:
                ended = await self._end_batch_if_done(conn, job.batch_id, now)
        moved = queue_move({"status": job.status.value})
        await self._committed(
            job_id, work=requeued, job_type=job.type, ending=job.terminal, moved=moved
        )
        if ended and job.batch_id is not None:
            await self._committed(job.batch_id)
        return job

    async def _transition_row(
        self, conn: Any, params: JSON, outputs: builtins.list[JSON]
    ) -> Row | None:
        """The `transition` query's row, `outputs` (as dicts) appended to the job's first;
        None when the job was not as expected."""
        for data in outputs:
            await self._run(conn, "append_output", {"id": params["id"], "output": dump_json(data)})
        return await self._one(conn, "transition", params)

    async def record_placement(
        self,
        job_id: str,
        worker_id: str,
        *,
        backend: str,
        prompt_id: str,
        execution_started_at: float | None,
    ) -> bool:
        params = {
            "id": job_id,
            "worker_id": worker_id,
            "backend": backend,
            "prompt_id": prompt_id,
            "execution_started_at": execution_started_at,
        }
        async with self._write_one() as conn:
            held = await self._run(conn, "set_placement", params) == 1
        await self._committed(job_id, ending=False)
        return held

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        data = progress_to_dict(progress)
        async with self._write() as conn:
            params = {"id": job_id, "progress": dump_json(data)}
            if await self._run(conn, "set_progress", params) != 1:
                raise transition.not_found(job_id)
            await self._append(conn, job_id, "progress", data, time.time())
        await self._committed(job_id, ending=False)

    async def add_output(self, job_id: str, output: Output) -> Job:
        data = output_to_dict(output)
        async with self._write() as conn:
            row = await self._one(conn, "add_output", {"id": job_id, "output": dump_json(data)})
            if row is None:
                raise transition.not_found(job_id)
            await self._append(conn, job_id, "output", data, time.time())
        await self._committed(job_id, ending=False)
        return job_from_row(row)

    async def _fair_tag(self, conn: Any, job: Job, now: float) -> float:
        """The virtual start tag of `job` in its fair group (comfyrun.core.batch)."""
        head = await self._one(conn, "fair_head", {"priority": job.priority, "now": now})
        last = None
        if job.fair_key != NO_GROUP:
            params = {"fair_key": job.fair_key, "priority": job.priority}
            last = await self._one(conn, "fair_last", params)
        return fair_tag(
            head["tag"] if head else None, last["tag"] if last and last["tag"] is not None else None
        )

    # -- housekeeping ------------------------------------------------------------------------

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        now = clock_or(now)
        lost = await self._jobs("expired_leases", {"now": now})
        return await maintenance.apply_each(
            self, lost, lambda j: maintenance.lease_lost_step(j, now), now=now, action="lease_lost"
        )

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        now = clock_or(now)
        stuck = await self._jobs("stuck", {"before": now - older_than_s})
        return await maintenance.apply_each(
            self, stuck, maintenance.requeue_step, now=now, action="requeue_stuck"
        )

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        now = clock_or(now)
        due = await self._jobs("expiring", {"now": now})
        return await maintenance.apply_each(
            self, due, maintenance.expire_step, now=now, action="expire"
        )

    async def delete(self, job_id: str) -> bool:
        async with self._write() as conn:
            await self._run(conn, "delete_events", {"id": job_id})
            return await self._run(conn, "delete_job", {"id": job_id}) == 1

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        async with self._write() as conn:
            rows = await self._all(conn, "delete_finished_before", {"cutoff": cutoff})
            jobs = [job_from_row(r) for r in rows]
            ended = await self._all(conn, "delete_batches_before", {"cutoff": cutoff})
            ids = self._text_list([j.id for j in jobs] + [str(r["id"]) for r in ended])
            await self._run(conn, "delete_events_of", {"ids": ids})
        return jobs


__all__ = ["SQLStore"]
