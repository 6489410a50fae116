"""The SQLite JobStore (`sqlite:///path.db`), via aiosqlite, in WAL mode.

One connection per store; an asyncio lock keeps one transaction at a time on it. Writes run in
`BEGIN IMMEDIATE` transactions (a claim takes the write lock before it reads, so two processes
never claim the same job) and wait up to `busy_timeout_s` for other processes' writers.

Waking waiters: SQLite has no notifications. Inside one process, every commit wakes the
waiters of that job (and, when a job became claimable, `wait_for_work`) at once. Across processes sharing the
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from comfyrun.core.job import JSON
from comfyrun.errors import InvalidRequest, StoreError
from comfyrun.store.base import JobEvent
from comfyrun.store.codec import dump_json
from comfyrun.store.migrate import migrate_sqlite
from comfyrun.store.queries import queries
from comfyrun.store.sqlstore import Row, SQLStore

Q = queries("sqlite")


class SQLiteStore(SQLStore):
    """A JobStore in one SQLite file (or `:memory:`, private to this store)."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_s: float = 30.0,
        cross_process_wait_s: float = 0.5,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise InvalidRequest(
                "synchronous is OFF, NORMAL, FULL or EXTRA", details={"synchronous": synchronous}
            )
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_s = busy_timeout_s
        self.cross_process_wait_s = cross_process_wait_s
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._job_waiters: dict[str, set[asyncio.Event]] = {}
        self._work = asyncio.Condition()

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
            # FULL: an acknowledged enqueue survives a power cut, not only a process crash.
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await migrate_sqlite(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def wait_for_event(
        self, job_id: str, after_id: int, timeout: float
    ) -> builtins.list[JobEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        woken = asyncio.Event()
        waiters = self._job_waiters.setdefault(job_id, set())
        waiters.add(woken)  # before looking, so no commit slips between the look and the wait
        try:
            version = await self._data_version()
            while True:
                woken.clear()
                events = await self.events_since(job_id, after_id)
                if events:
                    return events
                changed, version = await self._wait(woken.wait, deadline, version)
                if not changed:
                    return []
        finally:
            waiters.discard(woken)
            if not waiters:
                self._job_waiters.pop(job_id, None)

    async def wait_for_work(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._work:
            await self._wait(self._work.wait, deadline, await self._data_version())

    # -- plumbing ----------------------------------------------------------------------------

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

    async def _one(self, conn: aiosqlite.Connection, name: str, params: JSON) -> Row | None:
        async with conn.execute(Q[name], params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
        return dict(zip(row.keys(), row, strict=True)) if row is not None else None

    async def _all(self, conn: aiosqlite.Connection, name: str, params: JSON) -> list[Row]:
        async with conn.execute(Q[name], params) as cur:
            rows: builtins.list[sqlite3.Row] = builtins.list(await cur.fetchall())
        return [dict(zip(r.keys(), r, strict=True)) for r in rows]

    async def _run(self, conn: aiosqlite.Connection, name: str, params: JSON) -> int:
        async with conn.execute(Q[name], params) as cur:
            return int(cur.rowcount)

    async def _run_many(
        self, conn: aiosqlite.Connection, name: str, rows: builtins.list[JSON]
    ) -> None:
        if rows:
            await conn.executemany(Q[name], rows)

    async def _append(
        self,
        conn: aiosqlite.Connection,
        job_id: str,
        kind: str,
        data: JSON,
        now: float,
        work: bool = False,
    ) -> int:
        params = {"job_id": job_id, "kind": kind, "data": dump_json(data), "created_at": now}
        row = await self._one(conn, "insert_event", params)
        assert row is not None
        return int(row["id"])

    async def _lock_key(self, conn: aiosqlite.Connection, key: JSON) -> None:
        return None  # BEGIN IMMEDIATE already holds the database's one write lock

    async def _committed(self, job_id: str, *, work: bool = False) -> None:
        for woken in builtins.list(self._job_waiters.get(job_id, ())):
            woken.set()
        if work:
            async with self._work:
                self._work.notify_all()

    _no_limit = -1

    @staticmethod
    def _text_list(values: builtins.list[str]) -> Any:
        return json.dumps(values)  # read back with json_each()

    async def _data_version(self) -> int:
        async with self._read() as conn, conn.execute("PRAGMA data_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _wait(
        self, woken: Callable[[], Awaitable[Any]], deadline: float, version: int
    ) -> tuple[bool, int]:
        """Until `woken()` returns (a commit in this process) or another process commits
        (True), or until `deadline` (False). Returns the data version seen last."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(woken(), min(remaining, self.cross_process_wait_s))
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


__all__ = ["SQLiteStore"]
