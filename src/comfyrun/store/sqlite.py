"""The SQLite JobStore (`sqlite:///path.db`), via aiosqlite, in WAL mode.

One connection per store; an asyncio lock keeps one transaction at a time on it. Writes run in
`BEGIN IMMEDIATE` transactions (a claim takes the write lock before it reads, so two processes
never claim the same job) and wait up to `busy_timeout_s` for other processes' writers.

Waking waiters: SQLite has no notifications. Inside one process, every write notifies asyncio
conditions, so `wait_for_event` / `wait_for_work` wake at once. Across processes sharing the
file, a waiter also wakes every `cross_process_wait_s` (0.5 s by default), checks
`PRAGMA data_version` (which changes only when another connection commits) and looks again
only if it did: a short bounded wait, not a query per tick.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import aiosqlite

from comfyrun.core.job import JSON, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IdempotencyKeyReuse, StoreError
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
from comfyrun.store.migrate import migrate_sqlite
from comfyrun.store.queries import queries

Q = queries("sqlite")


class SQLiteStore:
    """A JobStore in one SQLite file (or `:memory:`, private to this store)."""

    def __init__(
        self, path: str, *, busy_timeout_s: float = 30.0, cross_process_wait_s: float = 0.5
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.cross_process_wait_s = cross_process_wait_s
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._work = asyncio.Condition()

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            # Probe first: a failed aiosqlite.connect leaves its thread to finish after the
            # caller's loop may be gone.
            await asyncio.to_thread(_probe, self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await migrate_sqlite(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def ping(self) -> bool:
        try:
            async with self._read() as conn:
                await conn.execute("SELECT 1")
        except StoreError:
            return False
        return True

    # -- the queue ---------------------------------------------------------------------------

    async def enqueue(self, new: NewJob, *, now: float | None = None) -> tuple[Job, bool]:
        now = _now(now)
        job = transition.enqueued(new, now)
        async with self._write() as conn:
            if new.idempotency_key is not None:
                key = {"scope": key_scope(new), "key": new.idempotency_key}
                row = await _one(conn, Q["get_key"], key)
                v = verdict(
                    stored_hash=row["request_hash"] if row else None,
                    stored_at=row["created_at"] if row else None,
                    request_hash=new.request_hash,
                    now=now,
                )
                if v is KeyVerdict.REUSED:
                    raise IdempotencyKeyReuse(details={"idempotency_key": new.idempotency_key})
                existing = await _one(conn, Q["get"], {"id": row["job_id"]}) if row else None
                if v is KeyVerdict.SAME and existing is not None:
                    return _job(existing), False
                await conn.execute(
                    Q["bind_key"],
                    {**key, "job_id": job.id, "request_hash": new.request_hash, "created_at": now},
                )
            try:
                await conn.execute(Q["insert_job"], job_to_row(job))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"job {job.id} already exists", details={"job_id": job.id}) from exc
            await _insert_event(conn, job.id, "status", transition.enqueue_event(job), now)
        await self._notify(work=True)
        return job, True

    async def claim(
        self, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> Job | None:
        now = _now(now)
        params = {"worker_id": worker_id, "lease_expires_at": now + lease_s, "now": now}
        async with self._write() as conn:
            row = await _one(conn, Q["claim"], params)
            if row is None:
                return None
            job = _job(row)
            await _insert_event(conn, job.id, "status", transition.claim_event(job), now)
        await self._notify()
        return job

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        params = {"id": job_id, "worker_id": worker_id, "lease_expires_at": _now(now) + lease_s}
        async with self._write() as conn:
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
        async with self._write() as conn:
            row = None
            if p.changes_status:
                row = await _one(
                    conn, Q["transition"], transition.plan_params(p, job_id, worker_id)
                )
            if row is None:
                current = await _one(conn, Q["get"], {"id": job_id})
                if current is None:
                    raise transition.not_found(job_id)
                job = _job(current)
                if job.status is not expect or (
                    worker_id is not None and job.worker_id != worker_id
                ):
                    raise transition.moved(job, expect, worker_id)
                return job  # a no-op transition: nothing written
            job = _job(row)
            await _insert_event(conn, job_id, "status", transition.status_event(job, p), now)
        await self._notify(work=job.status is JobStatus.QUEUED)
        return job

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        data = progress_to_dict(progress)
        async with self._write() as conn:
            cur = await conn.execute(Q["set_progress"], {"id": job_id, "progress": dump_json(data)})
            if cur.rowcount != 1:
                raise transition.not_found(job_id)
            await _insert_event(conn, job_id, "progress", data, time.time())
        await self._notify()

    async def add_output(self, job_id: str, output: Output) -> Job:
        data = output_to_dict(output)
        async with self._write() as conn:
            row = await _one(conn, Q["add_output"], {"id": job_id, "output": dump_json(data)})
            if row is None:
                raise transition.not_found(job_id)
            await _insert_event(conn, job_id, "output", data, time.time())
        await self._notify()
        return _job(row)

    # -- events ------------------------------------------------------------------------------

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        now = time.time()
        async with self._write() as conn:
            if await _one(conn, Q["job_exists"], {"id": job_id}) is None:
                raise transition.not_found(job_id)
            event_id = await _insert_event(conn, job_id, kind, data, now)
        await self._notify()
        return JobEvent(id=event_id, job_id=job_id, kind=kind, data=data, created_at=now)

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]:
        async with (
            self._read() as conn,
            conn.execute(Q["events_since"], {"job_id": job_id, "after_id": after_id}) as cur,
        ):
            rows = await cur.fetchall()
        return [
            JobEvent(
                id=r["id"],
                job_id=r["job_id"],
                kind=r["kind"],
                data=json.loads(r["data"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def wait_for_event(
        self, job_id: str, after_id: int, timeout: float
    ) -> builtins.list[JobEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        version = await self._data_version()
        while True:
            events = await self.events_since(job_id, after_id)
            if events:
                return events
            woken, version = await self._wait(self._changed, deadline, version)
            if not woken:
                return []

    async def wait_for_work(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        await self._wait(self._work, deadline, await self._data_version())

    # -- reads -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self._read() as conn:
            row = await _one(conn, Q["get"], {"id": job_id})
        return _job(row) if row else None

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None:
        async with self._read() as conn:
            row = await _one(conn, Q["get_by_prompt_id"], {"prompt_id": prompt_id})
        return _job(row) if row else None

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
            "statuses": json.dumps([s.value for s in statuses]) if statuses is not None else None,
            "owner": owner,
            "after_created": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        jobs = await self._jobs(Q["list"], params)
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
        async with self._read() as conn:
            row = await _one(conn, Q["queue_position"], params)
        return int(row[0]) if row else 0

    async def counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        async with self._read() as conn, conn.execute(Q["counts"]) as cur:
            for row in await cur.fetchall():
                counts[JobStatus(row["status"])] = int(row["n"])
        return counts

    async def oldest_queued_at(self) -> float | None:
        async with self._read() as conn:
            row = await _one(conn, Q["oldest_queued_at"], {})
        return float(row[0]) if row and row[0] is not None else None

    # -- housekeeping ------------------------------------------------------------------------

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        now = _now(now)
        lost = await self._jobs(Q["expired_leases"], {"now": now})
        return await maintenance.apply_each(
            self, lost, lambda j: maintenance.lease_lost_step(j, now), now=now, action="lease_lost"
        )

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        now = _now(now)
        stuck = await self._jobs(Q["stuck"], {"before": now - older_than_s})
        return await maintenance.apply_each(
            self, stuck, maintenance.requeue_step, now=now, action="requeue_stuck"
        )

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        now = _now(now)
        due = await self._jobs(Q["expiring"], {"now": now})
        return await maintenance.apply_each(
            self, due, maintenance.expire_step, now=now, action="expire"
        )

    async def delete(self, job_id: str) -> bool:
        async with self._write() as conn:
            await conn.execute(Q["delete_events"], {"id": job_id})
            cur = await conn.execute(Q["delete_job"], {"id": job_id})
            return cur.rowcount == 1

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        async with self._write() as conn:
            async with conn.execute(Q["delete_finished_before"], {"cutoff": cutoff}) as cur:
                jobs = [_job(r) for r in await cur.fetchall()]
            ids = json.dumps([j.id for j in jobs])
            await conn.execute(Q["delete_events_of"], {"ids": ids})
        return jobs

    # -- internals ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One BEGIN IMMEDIATE transaction; committed on success, rolled back on any error."""
        async with self._lock:
            conn = self._connection()
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite is busy: {exc}") from exc
            try:
                yield conn
            except BaseException as exc:
                await _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite write failed: {exc}") from exc
                raise
            else:
                try:
                    await conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    await _rollback(conn)
                    raise StoreError(f"SQLite commit failed: {exc}") from exc

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is not open")
        return self._conn

    async def _jobs(self, sql: str, params: dict[str, Any]) -> builtins.list[Job]:
        async with self._read() as conn, conn.execute(sql, params) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def _notify(self, *, work: bool = False) -> None:
        async with self._changed:
            self._changed.notify_all()
        if work:
            async with self._work:
                self._work.notify_all()

    async def _data_version(self) -> int:
        async with self._read() as conn:
            row = await _one(conn, "PRAGMA data_version", {})
        return int(row[0]) if row else 0

    async def _wait(
        self, cond: asyncio.Condition, deadline: float, version: int
    ) -> tuple[bool, int]:
        """Until `cond` is notified or another process commits (True), or `deadline` (False).

        Returns the data version seen last, for the next wait."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            async with cond:
                try:
                    await asyncio.wait_for(cond.wait(), min(remaining, self.cross_process_wait_s))
                    return True, version
                except TimeoutError:
                    pass
            current = await self._data_version()
            if current != version:
                return True, current
        return False, version


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
        await conn.execute("ROLLBACK")


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


def _job(row: sqlite3.Row) -> Job:
    return job_from_row(dict(zip(row.keys(), row, strict=True)))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


async def _one(conn: aiosqlite.Connection, sql: str, params: dict[str, Any]) -> sqlite3.Row | None:
    async with conn.execute(sql, params) as cur:
        row: sqlite3.Row | None = await cur.fetchone()
        return row


async def _insert_event(
    conn: aiosqlite.Connection, job_id: str, kind: str, data: JSON, now: float
) -> int:
    params = {"job_id": job_id, "kind": kind, "data": dump_json(data), "created_at": now}
    row = await _one(conn, Q["insert_event"], params)
    assert row is not None
    return int(row[0])


__all__ = ["SQLiteStore"]
