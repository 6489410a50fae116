"""The PostgreSQL JobStore (`postgresql://…[?schema=name]`), via psycopg 3 async with a pool.

Claims use `SELECT … FOR UPDATE SKIP LOCKED`, so any number of workers on any number of hosts
claim different jobs without waiting on each other. Every write that matters to a waiter sends a
NOTIFY in its transaction (delivered at commit) on one channel per schema: "e:<job id>" when a
job's log grew, "we:<job id>" when, besides, the job may have become claimable. Each store keeps one extra
connection LISTENing and wakes its local waiters, so `wait_for_work` and `wait_for_event` wake on
every API node and worker without polling. If the listener connection drops, all waiters are
woken (they look again) and it reconnects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from comfyrun.core.job import JSON, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IdempotencyKeyReuse, InvalidRequest, StoreError
from comfyrun.store import maintenance, transition
from comfyrun.store.base import Changes, JobEvent, JobPage
from comfyrun.store.codec import (
    decode_cursor,
    dump_json,
    encode_cursor,
    job_from_row,
    job_to_row,
    output_to_dict,
    progress_to_dict,
)
from comfyrun.store.idempotency import KeyVerdict, key_scope, verdict
from comfyrun.store.migrate import migrate_postgres
from comfyrun.store.queries import queries

log = logging.getLogger(__name__)

Q = {name: sql.encode() for name, sql in queries("postgresql").items()}
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
WORK = "w"

Conn = psycopg.AsyncConnection[DictRow]


class PostgresStore:
    """A JobStore in PostgreSQL, its tables in `schema`."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not _SCHEMA.match(schema):
            raise InvalidRequest(
                "a PostgreSQL schema name is letters, digits and _", details={"schema": schema}
            )
        self.dsn = dsn
        self.schema = schema
        self.channel = f"comfyrun_{schema}"
        self.connect_timeout_s = connect_timeout_s
        self.min_size, self.max_size = min_size, max_size
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._work = asyncio.Condition()
        self._job_waiters: dict[str, set[asyncio.Event]] = {}

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"row_factory": dict_row, "options": f"-c search_path={self.schema}"},
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_s)
            async with pool.connection() as conn:
                await migrate_postgres(conn, self.schema)
        except (psycopg.Error, TimeoutError, PoolTimeout) as exc:
            await pool.close()
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        self._pool = pool
        self._listener = asyncio.create_task(self._listen(), name="comfyrun-store-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), self.connect_timeout_s)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> bool:
        try:
            async with self._conn() as conn:
                await conn.execute("SELECT 1")
        except StoreError:
            return False
        return True

    # -- the queue ---------------------------------------------------------------------------

    async def enqueue(self, new: NewJob, *, now: float | None = None) -> tuple[Job, bool]:
        now = _now(now)
        job = transition.enqueued(new, now)
        async with self._tx() as conn:
            if new.idempotency_key is not None:
                key = {"scope": key_scope(new), "key": new.idempotency_key}
                await conn.execute(Q["lock_key"], key)
                row = await _one(conn, "get_key", key)
                v = verdict(
                    stored_hash=row["request_hash"] if row else None,
                    stored_at=row["created_at"] if row else None,
                    request_hash=new.request_hash,
                    now=now,
                )
                if v is KeyVerdict.REUSED:
                    raise IdempotencyKeyReuse(details={"idempotency_key": new.idempotency_key})
                existing = await _one(conn, "get", {"id": row["job_id"]}) if row else None
                if v is KeyVerdict.SAME and existing is not None:
                    return job_from_row(existing), False
                await conn.execute(
                    Q["bind_key"],
                    {**key, "job_id": job.id, "request_hash": new.request_hash, "created_at": now},
                )
            cur = await conn.execute(Q["insert_job"], job_to_row(job))
            if cur.rowcount != 1:
                raise Conflict(f"job {job.id} already exists", details={"job_id": job.id})
            await self._event(conn, job.id, "status", transition.enqueue_event(job), now, work=True)
        return job, True

    async def claim(
        self, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> Job | None:
        now = _now(now)
        params = {"worker_id": worker_id, "lease_expires_at": now + lease_s, "now": now}
        async with self._tx() as conn:
            row = await _one(conn, "claim", params)
            if row is None:
                return None
            job = job_from_row(row)
            await self._event(conn, job.id, "status", transition.claim_event(job), now)
        return job

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        params = {"id": job_id, "worker_id": worker_id, "lease_expires_at": _now(now) + lease_s}
        async with self._tx() as conn:
            cur = await conn.execute(Q["renew"], params)
            return cur.rowcount == 1

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
        now = _now(now)
        p = transition.plan(expect, event, changes, now)
        async with self._tx() as conn:
            row = None
            if p.changes_status:
                row = await _one(conn, "transition", transition.plan_params(p, job_id, worker_id))
            if row is None:
                current = await _one(conn, "get", {"id": job_id})
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
            data = transition.status_event(job, p)
            await self._event(conn, job_id, "status", data, now, work=requeued)
        return job

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        data = progress_to_dict(progress)
        async with self._tx() as conn:
            cur = await conn.execute(Q["set_progress"], {"id": job_id, "progress": dump_json(data)})
            if cur.rowcount != 1:
                raise transition.not_found(job_id)
            await self._event(conn, job_id, "progress", data, time.time())

    async def add_output(self, job_id: str, output: Output) -> Job:
        data = output_to_dict(output)
        async with self._tx() as conn:
            row = await _one(conn, "add_output", {"id": job_id, "output": dump_json(data)})
            if row is None:
                raise transition.not_found(job_id)
            await self._event(conn, job_id, "output", data, time.time())
        return job_from_row(row)

    # -- events ------------------------------------------------------------------------------

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        now = time.time()
        async with self._tx() as conn:
            if await _one(conn, "lock_job", {"id": job_id}) is None:
                raise transition.not_found(job_id)
            event_id = await self._event(conn, job_id, kind, data, now)
        return JobEvent(id=event_id, job_id=job_id, kind=kind, data=data, created_at=now)

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]:
        async with self._conn() as conn:
            cur = await conn.execute(Q["events_since"], {"job_id": job_id, "after_id": after_id})
            rows = await cur.fetchall()
        return [
            JobEvent(
                id=r["id"],
                job_id=r["job_id"],
                kind=r["kind"],
                data=r["data"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def wait_for_event(
        self, job_id: str, after_id: int, timeout: float
    ) -> builtins.list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        waiters = self._job_waiters.setdefault(job_id, set())
        waiters.add(woken)  # before looking, so no NOTIFY slips between the look and the wait
        try:
            while True:
                woken.clear()
                events = await self.events_since(job_id, after_id)
                remaining = deadline - loop.time()
                if events or remaining <= 0:
                    return events
                try:
                    await asyncio.wait_for(woken.wait(), remaining)
                except TimeoutError:
                    return await self.events_since(job_id, after_id)
        finally:
            waiters.discard(woken)
            if not waiters:
                self._job_waiters.pop(job_id, None)

    async def wait_for_work(self, timeout: float) -> None:
        async with self._work:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), timeout)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self._conn() as conn:
            row = await _one(conn, "get", {"id": job_id})
        return job_from_row(row) if row else None

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None:
        async with self._conn() as conn:
            row = await _one(conn, "get_by_prompt_id", {"prompt_id": prompt_id})
        return job_from_row(row) if row else None

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        after = decode_cursor(cursor) if cursor is not None else None
        limit = max(0, limit)
        params = {
            "statuses": [s.value for s in statuses] if statuses is not None else None,
            "owner": owner,
            "after_created": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        jobs = await self._jobs("list", params)
        page = jobs[:limit]
        last = page[-1] if page and len(jobs) > limit else None
        return JobPage(
            jobs=page, next_cursor=encode_cursor(last.created_at, last.id) if last else None
        )

    async def queue_position(self, job_id: str, *, now: float | None = None) -> int | None:
        now = _now(now)
        job = await self.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return None
        params = {
            "now": now,
            "late": job.next_run_at > now,
            "priority": job.priority,
            "created_at": job.created_at,
            "id": job.id,
        }
        async with self._conn() as conn:
            row = await _one(conn, "queue_position", params)
        return int(row["count"]) if row else 0

    async def counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        async with self._conn() as conn:
            cur = await conn.execute(Q["counts"])
            for row in await cur.fetchall():
                counts[JobStatus(row["status"])] = int(row["n"])
        return counts

    async def oldest_queued_at(self) -> float | None:
        async with self._conn() as conn:
            row = await _one(conn, "oldest_queued_at", {})
        return float(row["oldest"]) if row and row["oldest"] is not None else None

    # -- housekeeping ------------------------------------------------------------------------

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        now = _now(now)
        lost = await self._jobs("expired_leases", {"now": now})
        return await maintenance.apply_each(
            self, lost, lambda j: maintenance.lease_lost_step(j, now), now=now, action="lease_lost"
        )

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        now = _now(now)
        stuck = await self._jobs("stuck", {"before": now - older_than_s})
        return await maintenance.apply_each(
            self, stuck, maintenance.requeue_step, now=now, action="requeue_stuck"
        )

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        now = _now(now)
        due = await self._jobs("expiring", {"now": now})
        return await maintenance.apply_each(
            self, due, maintenance.expire_step, now=now, action="expire"
        )

    async def delete(self, job_id: str) -> bool:
        async with self._tx() as conn:
            await conn.execute(Q["delete_events"], {"id": job_id})
            cur = await conn.execute(Q["delete_job"], {"id": job_id})
            return cur.rowcount == 1

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        async with self._tx() as conn:
            cur = await conn.execute(Q["delete_finished_before"], {"cutoff": cutoff})
            jobs = [job_from_row(r) for r in await cur.fetchall()]
            await conn.execute(Q["delete_events_of"], {"ids": [j.id for j in jobs]})
        return jobs

    # -- internals ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection in autocommit-free mode; psycopg errors become StoreError."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed: {exc}") from exc

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def _jobs(self, name: str, params: dict[str, Any]) -> builtins.list[Job]:
        async with self._conn() as conn:
            cur = await conn.execute(Q[name], params)
            return [job_from_row(r) for r in await cur.fetchall()]

    async def _event(
        self, conn: Conn, job_id: str, kind: str, data: JSON, now: float, *, work: bool = False
    ) -> int:
        """Append an event and NOTIFY: "e:<id>", or "we:<id>" when a job became claimable."""
        params = {
            "job_id": job_id,
            "kind": kind,
            "data": dump_json(data),
            "created_at": now,
            "channel": self.channel,
            "payload": f"{WORK if work else ''}e:{job_id}",
        }
        row = await _one(conn, "insert_event", params)
        assert row is not None
        return int(row["id"])

    async def _listen(self) -> None:
        """Relay this schema's NOTIFYs to local waiters, reconnecting after failures."""
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout_s)
                )
                async with conn:
                    await conn.execute(f'LISTEN "{self.channel}"'.encode())
                    self._listening.set()
                    backoff = 0.5
                    await self._wake_all()  # anything sent while we were away
                    async for note in conn.notifies():
                        await self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning(
                    "store listener lost its connection: %s; reconnecting",
                    exc,
                    extra={"action": "store_listen_retry"},
                )
            self._listening.clear()
            await self._wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _dispatch(self, payload: str) -> None:
        flags, _, job_id = payload.partition("e:")
        if WORK in flags:
            async with self._work:
                self._work.notify_all()
        for woken in builtins.list(self._job_waiters.get(job_id, ())):
            woken.set()

    async def _wake_all(self) -> None:
        async with self._work:
            self._work.notify_all()
        for waiters in builtins.list(self._job_waiters.values()):
            for woken in waiters:
                woken.set()


def _now(now: float | None) -> float:
    return time.time() if now is None else now


async def _one(conn: Conn, name: str, params: dict[str, Any]) -> DictRow | None:
    cur = await conn.execute(Q[name], params)
    return await cur.fetchone()


__all__ = ["PostgresStore"]
