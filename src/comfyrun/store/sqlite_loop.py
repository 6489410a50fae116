"""The SQLite store's reads on the event loop's own thread (mixed into SQLiteStore,
store.sqlite): a read-only connection of the loop's own answers what is quick there — point
reads, the kept counts, a client's few unfinished jobs, a queued job's position near either end
of the queue — without the two thread hops of a call shipped to the store's thread. In WAL mode
that reader never waits for the writer; a read that would have to wait (SQLITE_BUSY), or that
turns out long (a step budget, LOOP_POSITION_STEPS), is shipped instead."""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from comfyrun.core.job import JSON, Job, JobStatus
from comfyrun.errors import StoreError
from comfyrun.store.base import clock_or
from comfyrun.store.codec import job_from_row
from comfyrun.store.queries import queries
from comfyrun.store.sqldialect import Row
from comfyrun.store.sqlite_calls import dict_row
from comfyrun.store.sqlreads import SQLReads, counts_of, counts_query, position_of
from comfyrun.store.sqlstore import SQLStore

Q = queries("sqlite")

#: Point reads answered on the event loop's own thread, from a read-only connection of its own
#: (in WAL mode a reader never waits for the writer): a job, its events. Tens of microseconds,
#: less than the two thread hops of a shipped call. One that would have to wait (SQLITE_BUSY,
#: e.g. while another connection recovers the WAL index) is shipped to the store's thread.
LOOP_READS = frozenset({"get", "events_since"})
#: A ComfyUI client's unfinished jobs (looked up at each /ws connect; almost always none) are
#: read on the loop's thread when there are at most this many; more are read on the store's.
LOOP_ROWS_MAX = 8
#: A queued job's position is counted on the loop's thread when that takes at most this many
#: of SQLite's virtual-machine steps (~20 us; a job near either end of the queue, or behind
#: few jobs); past that the count is abandoned there and shipped to the store's thread.
LOOP_POSITION_STEPS = 4000
#: How often (in steps) a read with a step budget checks it.
STEP_TICK = 100


class _StepBudget:
    """A progress handler that interrupts a statement after `ticks` calls."""

    def __init__(self, ticks: int) -> None:
        self.left = ticks

    def __call__(self) -> int:
        self.left -= 1
        return 1 if self.left < 0 else 0


class SQLiteLoopReads:
    """The reads that choose where they run (see the module)."""

    _reader: sqlite3.Connection | None  # LOOP_READS, on the loop's thread
    _loop_thread_id: int | None

    if TYPE_CHECKING:  # SQLiteStore's and SQLReads' (later in the MRO: not defined here)

        async def _call(
            self,
            fn: Callable[..., Coroutine[Any, Any, Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            *,
            read: bool,
        ) -> Any: ...

        def _position_query(self, job: Job, now: float, limit: int | None) -> tuple[str, JSON]: ...

    def counts_now(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int] | None:
        # the counts the triggers keep (job_counts): a few rows, read on the loop's thread
        rows = self._on_loop(*counts_query(unfinished=unfinished, owner=owner))
        return None if rows is None else counts_of(rows)

    async def counts(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        found = self.counts_now(unfinished=unfinished, owner=owner)
        if found is not None:
            return found
        counted: dict[JobStatus, int] = await self._call(
            SQLStore.counts, (), {"unfinished": unfinished, "owner": owner}, read=True
        )
        return counted

    async def unfinished_for_client(
        self, client_id: str, *, owner: str | None = None, limit: int = 500
    ) -> builtins.list[Job]:
        limit = max(0, limit)
        few = min(limit, LOOP_ROWS_MAX)
        params = {"client_id": client_id, "owner": owner, "limit": few + 1}
        rows = self._on_loop("unfinished_for_client", params)
        if rows is not None and (len(rows) <= few or few == limit):
            return [job_from_row(row) for row in rows[:limit]]
        found: builtins.list[Job] = await self._call(
            SQLStore.unfinished_for_client,
            (client_id,),
            {"owner": owner, "limit": limit},
            read=True,
        )
        return found

    def _on_loop(
        self, name: str, params: JSON, *, steps: int | None = None
    ) -> builtins.list[Row] | None:
        """A bounded read on the loop's own connection (as LOOP_READS), from the loop's thread;
        None where there is none, or it would have to wait, or (with `steps`) it would take
        more than about that many of SQLite's virtual-machine steps: the caller ships it."""
        reader = self._reader
        if reader is None or threading.get_ident() != self._loop_thread_id:
            return None
        if steps is not None:
            reader.set_progress_handler(_StepBudget(steps // STEP_TICK), STEP_TICK)
        try:
            rows: builtins.list[Row] = reader.execute(Q[name], params).fetchall()
        except sqlite3.Error:
            return None
        finally:
            if steps is not None:
                reader.set_progress_handler(None, 0)
        return rows

    async def queue_position(
        self,
        job_id: str,
        *,
        now: float | None = None,
        limit: int | None = None,
        job: Job | None = None,
    ) -> int | None:
        """Counted on the loop's thread when that is quick (the job as just read, at the front
        or the back of the queue: LOOP_POSITION_STEPS), else on the store's thread."""
        if job is not None and job.id == job_id and self._reader is not None:
            if job.status is not JobStatus.QUEUED:
                return None
            at = clock_or(now)
            rows = self._on_loop(*self._position_query(job, at, limit), steps=LOOP_POSITION_STEPS)
            if rows is not None:
                return position_of(rows[0] if rows else None, limit)
        found: int | None = await self._call(
            SQLReads.queue_position,
            (job_id,),
            {"now": now, "limit": limit, "job": job},
            read=True,
        )
        return found


def open_reader(path: str) -> sqlite3.Connection:
    """The loop's read-only connection: never waits for a lock (busy_timeout 0)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA busy_timeout = 0")
    conn.row_factory = dict_row
    return conn


def busy(exc: StoreError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and (
        "locked" in str(cause) or "busy" in str(cause)
    )


__all__ = [
    "LOOP_POSITION_STEPS",
    "LOOP_READS",
    "LOOP_ROWS_MAX",
    "SQLiteLoopReads",
    "busy",
    "open_reader",
]
