"""The SQL stores' job events (mixed into SQLStore): an event appended under the job's row lock,
the events after one read back; and the waiting each dialect supplies (for a job's events, for
work, the work token, the queue watch)."""

from __future__ import annotations

import builtins
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence

from comfyrun.core.job import JSON, Job, may_end
from comfyrun.store import transition
from comfyrun.store.base import JobEvent, JobStore, QueueHeard, end_by_events, nothing_to_stop
from comfyrun.store.codec import load_json
from comfyrun.store.sqldialect import SQLDialect


class SQLEvents(SQLDialect):
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
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]: ...

    async def wait_for_end(
        self: JobStore, job_id: str, timeout: float, *, owner: str | None = None
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


__all__ = ["SQLEvents"]
