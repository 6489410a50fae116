"""The SQLite store's statements (mixed into SQLiteStore, store.sqlite): a call's write
transaction (a savepoint in the batch's), the named queries run on the batch's connection, and
the writes SQLStore leaves to its dialect (events, a transition's outputs, a job's rows).

Each statement costs the event loop ~10-20 us of CPU in a busy `serve` whatever it does (its
caches cold from the HTTP and websocket work between statements), so a job's life is written
in as few as they can be: a change's events in one INSERT, a success's last output in its
transition's UPDATE, and no savepoint for a batch's first write.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import sqlite3
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from comfyrun.core.job import COMFY, JSON
from comfyrun.errors import StoreError
from comfyrun.store.base import ClaimChoice
from comfyrun.store.codec import dump_json
from comfyrun.store.queries import queries
from comfyrun.store.sqldialect import Row
from comfyrun.store.sqlite_calls import rollback
from comfyrun.store.sqlstore import SQLStore

Q = queries("sqlite")


class SQLiteStatements(SQLStore):
    """SQLStore's statements on SQLite (SQLiteStore sets these)."""

    #: the next write is the batch's first (set by store.sqlite_runner)
    _bare: bool

    @abstractmethod
    def _connection(self) -> sqlite3.Connection:
        """The connection of the thread running the batch's calls (store.sqlite)."""

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[sqlite3.Connection]:
        """A savepoint inside the batch's transaction: a failing call undoes only its own
        writes; the batch commits once. The batch's first write needs none (its transaction
        holds nothing yet): should it fail having changed rows, the transaction is rolled back
        and begun again, as empty as a savepoint's undoing leaves it (one that changed none,
        as a transition that found its job moved, leaves it as it is); two statements fewer a
        batch (SAVEPOINT, RELEASE: ~10 us each of the loop's CPU), for most calls of an idle
        store all of them. (Begun again, the transaction may find another process holding
        the lock: the batch's other calls then fail, its commit with them.)"""
        conn = self._connection()
        if not conn.in_transaction:
            raise StoreError("a SQLite write outside a write batch (a read-only call wrote)")
        if self._bare:
            self._bare = False  # any write nested in this one, or after it, has a savepoint
            changes = conn.total_changes  # (rows inserted, updated, deleted; triggers' too)
            try:
                yield conn
            except BaseException as exc:
                if conn.total_changes != changes:
                    rollback(conn)
                    with contextlib.suppress(sqlite3.Error):  # else the commit fails, all told
                        conn.execute("BEGIN IMMEDIATE")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite write failed: {exc}") from exc
                raise
            return
        conn.execute("SAVEPOINT call")
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"SQLite write failed: {exc}") from exc
            raise
        else:
            conn.execute("RELEASE call")

    async def _one(self, conn: sqlite3.Connection, name: str, params: JSON) -> Row | None:
        row: Row | None = conn.execute(Q[name], params).fetchone()
        return row

    async def _all(self, conn: sqlite3.Connection, name: str, params: JSON) -> list[Row]:
        rows: list[Row] = conn.execute(Q[name], params).fetchall()
        return rows

    async def _run(self, conn: sqlite3.Connection, name: str, params: JSON) -> int:
        return int(conn.execute(Q[name], params).rowcount)

    async def _run_many(self, conn: sqlite3.Connection, name: str, rows: list[JSON]) -> None:
        if rows:
            conn.executemany(Q[name], rows)

    async def _append(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        kind: str,
        data: JSON,
        now: float,
        work: bool = False,
        job_type: str | None = None,
    ) -> int:
        params = {"job_id": job_id, "kind": kind, "data": dump_json(data), "created_at": now}
        row = await self._one(conn, "insert_event", params)
        assert row is not None
        return int(row["id"])

    async def _append_all(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        events: builtins.list[tuple[str, JSON]],
        now: float,
        work: bool = False,
        job_type: str | None = None,
        *,
        new: bool = False,
    ) -> None:
        """A change's events in one statement (a multi-row INSERT, its rows, and so their ids,
        in order): each statement costs ~10-20 us of the loop's CPU in a busy `serve`, its
        caches cold, whatever it does."""
        if len(events) < 2:
            await super()._append_all(conn, job_id, events, now, work, job_type)
            return
        values = [v for kind, data in events for v in (job_id, kind, dump_json(data), now)]
        conn.execute(_insert_events(len(events)), values)

    async def _claim_row(
        self,
        conn: sqlite3.Connection,
        params: JSON,
        types: Sequence[str] | None,
        choice: ClaimChoice | None,
    ) -> Row | None:
        """A claim of the head of one type's queue (a worker serving one type, nothing to
        choose among) in one statement (claim_comfy, claim_type); any other, SQLStore's way."""
        kinds = set(types) if types is not None and choice is None else ()
        if len(kinds) != 1:
            return await super()._claim_row(conn, params, types, choice)
        (kind,) = kinds
        if kind == COMFY:
            return await self._one(conn, "claim_comfy", params)
        return await self._one(conn, "claim_type", params | {"type": kind})

    async def _transition_row(
        self, conn: sqlite3.Connection, params: JSON, outputs: builtins.list[JSON]
    ) -> Row | None:
        """The `transition` query's row, `outputs` appended: the last by the transition's own
        UPDATE (TRANSITION_OUTPUT), any before it first (append_output)."""
        if not outputs:
            return await self._one(conn, "transition", params)
        for data in outputs[:-1]:
            await self._run(conn, "append_output", {"id": params["id"], "output": dump_json(data)})
        last = {"output": dump_json(outputs[-1])}
        row: Row | None = conn.execute(TRANSITION_OUTPUT, params | last).fetchone()
        return row

    async def _insert_job(self, conn: sqlite3.Connection, row: JSON) -> bool:
        # the workflow in its own table (0014_job_workflows), not rewritten at each UPDATE
        if await self._run(conn, "insert_job", row) != 1:
            return False
        await self._run(conn, "insert_workflow", row)
        return True

    async def _insert_jobs(self, conn: sqlite3.Connection, rows: builtins.list[JSON]) -> None:
        await self._run_many(conn, "insert_job", rows)
        await self._run_many(conn, "insert_workflow", rows)


#: `transition` appending one output as it changes the status (a job's success: one statement
#: where append_output and transition were two).
TRANSITION_OUTPUT = Q["transition"].replace(
    "SET\n    status = :status,",
    "SET\n    outputs = json_insert(outputs, '$[#]', json(:output)),\n    status = :status,",
    1,
)
if Q["transition"] == TRANSITION_OUTPUT:  # pragma: no cover - the query's text changed
    raise RuntimeError("the SQLite transition query has no `SET status = :status,` to extend")


@functools.cache
def _insert_events(n: int) -> str:
    """The INSERT of `n` events (job_id, kind, data, created_at each)."""
    rows = ", ".join(["(?, ?, ?, ?)"] * n)
    return f"INSERT INTO job_events (job_id, kind, data, created_at) VALUES {rows}"


__all__ = ["TRANSITION_OUTPUT", "SQLiteStatements"]
