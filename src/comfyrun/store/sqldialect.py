"""What a SQL dialect supplies to SQLStore (its connection plumbing: transactions, running a named
query, appending an event, waking this process's waiters) and the defaults a dialect may keep."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from comfyrun.core.job import JSON, Job
from comfyrun.store.base import QueueMove

Row = dict[str, Any]


class SQLDialect(ABC):
    """The dialect's part of a SQL store; SQLStore's methods are written against it."""

    @abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Any]:
        """A connection for reads."""

    @abstractmethod
    def _write(self) -> AbstractAsyncContextManager[Any]:
        """A connection in a write transaction, committed on success, rolled back on error."""

    def _write_one(self) -> AbstractAsyncContextManager[Any]:
        """A connection for a write of one statement: `_write`, unless the dialect's
        connections commit each statement by themselves (PostgreSQL's, in autocommit: one
        round trip instead of BEGIN, the statement, COMMIT)."""
        return self._write()

    @abstractmethod
    async def _one(self, conn: Any, name: str, params: JSON) -> Row | None:
        """The first row of named query `name`, as a dict."""

    @abstractmethod
    async def _all(self, conn: Any, name: str, params: JSON) -> builtins.list[Row]: ...

    @abstractmethod
    async def _run(self, conn: Any, name: str, params: JSON) -> int:
        """Run named query `name`; the number of rows it changed."""

    async def _run_many(self, conn: Any, name: str, rows: builtins.list[JSON]) -> None:
        """Run named query `name` once per row (dialects override with executemany)."""
        for row in rows:
            await self._run(conn, name, row)

    def _notify_params(self, job_id: str) -> JSON:
        """Extra parameters of `insert_event_many` (PostgreSQL: its NOTIFY)."""
        return {}

    async def _insert_job(self, conn: Any, row: JSON) -> bool:
        """Insert a job row; False if the id exists."""
        return await self._run(conn, "insert_job", row) == 1

    async def _insert_jobs(self, conn: Any, rows: builtins.list[JSON]) -> None:
        """Insert job rows (new ids: a batch's)."""
        await self._run_many(conn, "insert_job", rows)

    @abstractmethod
    async def _append(
        self,
        conn: Any,
        job_id: str,
        kind: str,
        data: JSON,
        now: float,
        work: bool = False,
        job_type: str | None = None,
    ) -> int:
        """Append an event inside the write transaction; `work`: the job (of `job_type`, when
        known) became claimable."""

    async def _append_all(
        self,
        conn: Any,
        job_id: str,
        events: builtins.list[tuple[str, JSON]],
        now: float,
        work: bool = False,
        job_type: str | None = None,
        *,
        new: bool = False,
    ) -> None:
        """Append a change's events (kind, data) in order; `work` as `_append`'s, said with the
        last (PostgreSQL writes them in one statement); `new`: the events of a job created
        not claimable (handed off as it was enqueued), which PostgreSQL tells the other
        processes of all the same (JobStore.watch_new_work)."""
        for n, (kind, data) in enumerate(events, 1):
            last = n == len(events)
            await self._append(
                conn, job_id, kind, data, now, work and last, job_type if last else None
            )

    @abstractmethod
    async def _lock_key(self, conn: Any, key: JSON) -> None:
        """Serialise concurrent requests that carry one idempotency key."""

    def _decided(self, decided: Callable[[Job, bool], None], job: Job, created: bool) -> None:
        """`HandOff.decided`, for a store that can say it before the commit (SQLite): here the
        write has committed already, so nothing is said early."""
        return None

    @abstractmethod
    async def _committed(
        self,
        job_id: str,
        *,
        work: bool = False,
        job_type: str | None = None,
        ending: bool = True,
        moved: QueueMove | None = None,
    ) -> None:
        """Called after a write to `job_id` committed, to wake this process's waiters; `work`:
        a job (of `job_type`, when known) may have become claimable; `ending`: the write may
        have ended the job (False only where it certainly did not: a job queued or claimed,
        its placement, progress or an output noted); `moved`: how it changed the queue, for
        the store's `watch_queue` (a store whose notifications tell it ignores it)."""

    @staticmethod
    def _text_list(values: builtins.list[str]) -> Any:
        """A list of strings as the dialect's query parameter."""
        return values


__all__ = ["Row", "SQLDialect"]
