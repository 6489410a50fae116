"""The PostgreSQL JobStore (`postgresql://…[?schema=name]`), via psycopg 3 async with a pool.

Claims use `SELECT … FOR UPDATE SKIP LOCKED`, so any number of workers on any number of hosts
claim different jobs without waiting on each other. Every event appended also sends a NOTIFY in
its transaction (delivered at commit) on one channel per schema: "e:<job id>" when a job's log
grew, "we:<job id>" when, besides, the job may have become claimable, each after a mark of
whether the event may end the job ("t;": a status event that may; "n;": any other), so a
`wait_for_end` (a `?wait` on an API node) is not woken to read a job at its progress, logs and
outputs (a payload without a mark, from an older node, may end it); "s;e:<job id>" (after the
mark) when the job was claimed, so the ComfyUI sockets of every API node hear it start
(`watch_queue`: a job that joined, started or may have ended the queue). Each store keeps one extra
connection LISTENing and wakes its local waiters (comfyrun.store.pglisten,
comfyrun.store.pgwaits), so `wait_for_work`, `wait_for_event` and `wait_for_end` wake on every
API node and worker without polling. If the listener connection drops, all waiters are woken
(they look again) and it reconnects. The commonest changes of a job's life (its enqueue, its claim, its end) are one statement each
where they can be (comfyrun.store.pgstatements).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from comfyrun import jsontext
from comfyrun.core.job import JSON, may_end
from comfyrun.errors import InvalidRequest, StoreError
from comfyrun.store.base import QueueMove, QueueWatchers, WorkCounts
from comfyrun.store.codec import dump_json
from comfyrun.store.migrate import migrate_postgres
from comfyrun.store.pglisten import PgListening
from comfyrun.store.pgstatements import Q, claimed, event_params, payload
from comfyrun.store.sqldialect import Row
from comfyrun.store.writable import WriteHealth

log = logging.getLogger(__name__)

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
Conn = psycopg.AsyncConnection[DictRow]


def _holds_nul_error(exc: psycopg.Error) -> bool:
    """Whether `exc` says a value held a NUL character: psycopg refuses one in a text
    parameter ("cannot contain NUL"), PostgreSQL one in JSON (22P05, "\\u0000 cannot be
    converted to text"). A job's id in a URL (`/api/v2/jobs/a%00b`) is one such value."""
    if isinstance(
        exc, psycopg.errors.UntranslatableCharacter | psycopg.errors.CharacterNotInRepertoire
    ):
        return True
    return isinstance(exc, psycopg.DataError) and "NUL (0x00)" in str(exc)


def _cannot_write(exc: psycopg.Error) -> bool:
    """Whether `exc` says the database cannot take writes now (down, out of space, read-only),
    not that one statement was at fault (a deadlock, a lock or statement timeout)."""
    if exc.sqlstate is None:  # the client's: no connection, or none from the pool in time
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return exc.sqlstate.startswith(_CANNOT_WRITE)


#: SQLSTATE prefixes of a database that cannot write: connection exceptions, insufficient
#: resources (disk full), operator intervention (shutting down), system errors, a read-only
#: transaction (a standby), internal errors.
_CANNOT_WRITE = ("08", "53", "57P", "58", "25006", "XX")


class PostgresStore(PgListening):
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
        self._work_counts = WorkCounts()
        self._work_watchers: list[Callable[[str, str | None], None]] = []
        self._queue_watchers = QueueWatchers()
        self._job_waiters = {}
        self._listen_epoch = 0
        self._queued_here = OrderedDict()
        self._held_here = OrderedDict()
        self._stirred = OrderedDict()
        self._stirs = 0
        self.write_health = WriteHealth()  # noted at each write (_write, _write_one)

    async def open(self) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={
                "row_factory": dict_row,
                "options": f"-c search_path={self.schema}",
                "autocommit": True,
            },
            configure=_read_json_with_jsontext,
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_s)
            async with pool.connection() as conn:
                await migrate_postgres(conn, self.schema)
        except (psycopg.Error, TimeoutError, PoolTimeout) as exc:
            await pool.close()
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        self._pool = pool
        self.write_health.ok()  # its migrations committed
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

    # -- plumbing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        """A pooled connection; psycopg errors become StoreError."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            if _holds_nul_error(exc):  # the value's fault, not the database's: a 4xx, not 503
                raise InvalidRequest(
                    "a value holds a NUL character (\\u0000), which PostgreSQL cannot store or "
                    "look up",
                    details={"reason": str(exc).splitlines()[0]},
                ) from exc
            if _cannot_write(exc):
                self.write_health.failed(f"PostgreSQL failed: {exc}")
            raise StoreError(f"PostgreSQL failed: {exc}") from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        async with self._read() as conn, conn.transaction():
            yield conn
        self.write_health.ok()

    @asynccontextmanager
    async def _write_one(self) -> AsyncIterator[Conn]:
        async with self._read() as conn:  # autocommit: the statement commits by itself
            yield conn
        self.write_health.ok()

    async def _one(self, conn: Conn, name: str, params: JSON) -> Row | None:
        cur = await conn.execute(Q[name], params)
        return await cur.fetchone()

    async def _all(self, conn: Conn, name: str, params: JSON) -> builtins.list[Row]:
        cur = await conn.execute(Q[name], params)
        return await cur.fetchall()

    async def _run(self, conn: Conn, name: str, params: JSON) -> int:
        cur = await conn.execute(Q[name], params)
        return cur.rowcount

    def _notify_params(self, job_id: str) -> JSON:
        return {"channel": self.channel, "payload": f"e:{job_id}"}

    async def _run_many(self, conn: Conn, name: str, rows: builtins.list[JSON]) -> None:
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(Q[name], rows)

    async def _append(
        self,
        conn: Conn,
        job_id: str,
        kind: str,
        data: JSON,
        now: float,
        work: bool = False,
        job_type: str | None = None,
        *,
        new: bool = False,
    ) -> int:
        """Append an event and NOTIFY ("e:<id>"; "w=<type>;e:<id>" when a job of that type
        became claimable, "we:<id>" when one of a type not told did; "+=<type>;e:<id>" when
        a job was created claimed, see `payload`).

        The job's row lock (taken by the statement before, or by `lock_job`) is held until
        commit, so one job's event ids commit in the order they were drawn."""
        notify = payload(
            job_id,
            ending=may_end(kind, data),
            work=work,
            job_type=job_type,
            new=new,
            started=claimed(kind, data),
            status=kind == "status",
        )
        params = event_params(self.channel, job_id, kind, data, now, notify)
        row = await self._one(conn, "insert_event", params)
        assert row is not None
        return int(row["id"])

    async def _append_all(
        self,
        conn: Conn,
        job_id: str,
        events: builtins.list[tuple[str, JSON]],
        now: float,
        work: bool = False,
        job_type: str | None = None,
        *,
        new: bool = False,
    ) -> None:
        """The events in one statement (insert_events) and one NOTIFY: marked ending when any
        of them may end the job, with the work flags when the job became claimable (or the
        new job's, when it was created claimed)."""
        if len(events) == 1:
            kind, data = events[0]
            await self._append(conn, job_id, kind, data, now, work, job_type, new=new)
            return
        ending = any(may_end(kind, data) for kind, data in events)
        started = any(claimed(kind, data) for kind, data in events)
        status = any(kind == "status" for kind, _ in events)
        params = {
            "job_id": job_id,
            "events": dump_json([[kind, data] for kind, data in events]),
            "created_at": now,
            "channel": self.channel,
            "payload": payload(
                job_id,
                ending=ending,
                work=work,
                job_type=job_type,
                new=new,
                started=started,
                status=status,
            ),
        }
        await self._one(conn, "insert_events", params)

    async def _transition_row(
        self, conn: Conn, params: JSON, outputs: builtins.list[JSON]
    ) -> Row | None:
        """The outputs appended by the `transition` statement itself."""
        appended = dump_json(outputs) if outputs else None
        return await self._one(conn, "transition", params | {"outputs": appended})

    async def _lock_key(self, conn: Conn, key: JSON) -> None:
        await conn.execute(Q["lock_key"], key)

    async def _committed(
        self,
        job_id: str,
        *,
        work: bool = False,
        job_type: str | None = None,
        ending: bool = True,
        moved: QueueMove | None = None,
    ) -> None:
        return None  # the NOTIFY sent in the transaction comes back through the listener


__all__ = ["PostgresStore"]


async def _read_json_with_jsontext(conn: Conn) -> None:
    """JSONB columns read by comfyrun.jsontext (orjson; a job's workflow at every claim and
    transition), as the store writes them."""
    set_json_loads(jsontext.loads, conn)
