"""What the SQLite and PostgreSQL stores share: every JobStore method written once against named
queries (`sql/<dialect>/queries.sql`); its reads of jobs are `SQLReads` (store.sqlreads), its
batches, keys, workers registry and node catalogs the other mixins. A dialect supplies its
connection plumbing (`SQLDialect`, store.sqldialect: transactions, running a named query,
appending an event, PostgreSQL's NOTIFY there) and its waiting.
"""

from __future__ import annotations

import builtins
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from comfyrun.core.batch import NO_GROUP, fair_tag
from comfyrun.core.job import COMFY, JSON, Job, JobStatus, NewJob, Output, Progress, may_end
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IdempotencyKeyReuse, StoreError
from comfyrun.store import maintenance, transition
from comfyrun.store.base import (
    Changes,
    ClaimChoice,
    ClaimNote,
    HandOff,
    JobEvent,
    JobStamp,
    QueueHeard,
    QueueMove,
    clock_or,
    end_by_events,
    nothing_to_stop,
    queue_move,
)
from comfyrun.store.codec import (
    dump_json,
    job_from_row,
    job_to_row,
    load_json,
    output_to_dict,
    progress_to_dict,
)
from comfyrun.store.idempotency import KeyVerdict, key_scope, verdict
from comfyrun.store.replacing import check as replacing_check
from comfyrun.store.replacing import remove_as_read
from comfyrun.store.sqlbatches import SQLBatches
from comfyrun.store.sqlcatalogs import SQLCatalogs
from comfyrun.store.sqldialect import Row
from comfyrun.store.sqlprobe import SQLWriteProbe
from comfyrun.store.sqlreads import SQLReads
from comfyrun.store.sqlretrying import SQLRetryCounts
from comfyrun.store.sqltenancy import SQLTenancy
from comfyrun.store.sqlworkers import SQLWorkers


class SQLStore(
    SQLWriteProbe, SQLRetryCounts, SQLCatalogs, SQLReads, SQLTenancy, SQLWorkers, SQLBatches
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

    async def _claimed(self, conn: Any, row: Row, note: ClaimNote | None, now: float) -> Job:
        """The job a claim just took, with the claim's events (and the note's) logged."""
        job = job_from_row(row)
        await self._log_claim(conn, job, note, now)
        return job

    async def _log_claim(self, conn: Any, job: Job, note: ClaimNote | None, now: float) -> None:
        """A claim's events: its status change, then the note's event if it has one."""
        await self._append_all(conn, job.id, _claim_events(job, note), now)

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
            events += _claim_events(job, hand_off.note)  # logged with the enqueue's, at once
        if not await self._insert_job(conn, job_to_row(job)):
            raise Conflict(f"job {job.id} already exists", details={"job_id": job.id})
        if decided is not None:
            self._decided(decided, job, True)
        await self._append_all(conn, job.id, events, now, work, job.type, new=True)
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
        params = {"worker_id": worker_id, "lease_expires_at": now + lease_s, "now": now}
        async with self._write() as conn:
            row = await self._claim_row(conn, params, types, choice)
            if row is None:
                return None
            job = await self._claimed(conn, row, note, now)
        await self._committed(job.id, ending=False, moved=QueueMove.STARTED)
        return job

    async def _claim_row(
        self,
        conn: Any,
        params: JSON,
        types: Sequence[str] | None,
        choice: ClaimChoice | None,
    ) -> Row | None:
        """The claim's row. Over every type: the head of the claim index, or the one `choice`
        picks among the first runnable jobs. For some types: the same among their first
        runnable jobs (comfy: walking the claim index; a handler type: its range of the
        type-led index), merged in claim order, locked by this transaction where the dialect
        locks rows, then taken by id."""
        if types is None:
            if choice is None:
                return await self._one(conn, "claim", params)
            window = {"now": params["now"], "window": max(1, choice.window)}
            rows = await self._all(conn, "claim_window", window)
        else:
            size = max(1, choice.window) if choice is not None else 1
            rows = []
            for kind in sorted(set(types)):
                query = "claim_window_comfy" if kind == COMFY else "claim_window_type"
                found = {"type": kind, "now": params["now"], "window": size}
                rows += await self._all(conn, query, found)
            rows.sort(key=lambda r: (-r["priority"], r["fair_tag"], r["rank_at"], r["id"]))
            rows = rows[:size]
        if not rows:
            return None
        chosen = choice.chosen([job_from_row(r) for r in rows]).id if choice else rows[0]["id"]
        return await self._one(conn, "claim_id", params | {"id": chosen})

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        params = {"id": job_id, "worker_id": worker_id, "lease_expires_at": clock_or(now) + lease_s}
        async with self._write_one() as conn:
            return await self._run(conn, "renew", params) == 1

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

    async def next_priority(
        self, *, now: float | None = None, types: Sequence[str] | None = None
    ) -> int | None:
        async with self._read() as conn:
            if types is None:
                row = await self._one(conn, "next_priority", {"now": clock_or(now)})
                return int(row["priority"]) if row else None
            heads = []
            for kind in sorted(set(types)):
                row = await self._one(
                    conn, "next_priority_type", {"type": kind, "now": clock_or(now)}
                )
                if row is not None:
                    heads.append(int(row["priority"]))
        return max(heads) if heads else None

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

    # -- events ------------------------------------------------------------------------------

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        now = time.time()
        async with self._write() as conn:
            if await self._one(conn, "lock_job", {"id": job_id}) is None:
                raise transition.not_found(job_id)
            event_id = await self._append(conn, job_id, kind, data, now)
        await self._committed(job_id, ending=may_end(kind, data))
        return JobEvent(id=event_id, job_id=job_id, kind=kind, data=data, created_at=now)

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]:
        async with self._read() as conn:
            rows = await self._all(conn, "events_since", {"job_id": job_id, "after_id": after_id})
        return [
            JobEvent(
                id=int(r["id"]),
                job_id=r["job_id"],
                kind=r["kind"],
                data=load_json(r["data"]) if isinstance(r["data"], str) else r["data"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    @abstractmethod
    async def wait_for_event(
        self, job_id: str, after_id: int, timeout: float, *, ending: bool = False
    ) -> builtins.list[JobEvent]: ...

    async def wait_for_end(
        self, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        return await end_by_events(self, job_id, timeout, owner)

    @abstractmethod
    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None: ...

    @abstractmethod
    def work_token(self, types: Sequence[str] | None = None) -> int | None: ...

    def watch_new_work(self, heard: Callable[[str, str | None], None]) -> Callable[[], None]:
        return nothing_to_stop  # one process holds it (PostgresStore hears the others)

    @abstractmethod
    def watch_queue(self, heard: QueueHeard) -> Callable[[], None]:
        """(SQLite: told as `_committed` says; PostgreSQL: by its listener, every node's)"""

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


def _claim_events(job: Job, note: ClaimNote | None) -> builtins.list[tuple[str, JSON]]:
    """A claim's events (kind, data): its status change, then the note's event if it has one."""
    events: builtins.list[tuple[str, JSON]] = [("status", transition.claim_event(job))]
    extra = note.of(job) if note is not None else None
    if extra is not None:
        events.append(extra)
    return events


__all__ = ["SQLStore"]
