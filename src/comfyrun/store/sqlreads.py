"""The SQL stores' reads of jobs (mixed into SQLStore): a job, a listing, the queue as ComfyUI
lists it, a queued job's position, the counts."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from comfyrun.core.job import JSON, Job, JobStatus
from comfyrun.store.base import JobEnd, JobPage, JobStamp, QueueEntry, clock_or
from comfyrun.store.codec import job_from_row, job_page, page_params, queue_entry_from_row
from comfyrun.store.sqldialect import Row, SQLDialect


class SQLReads(SQLDialect):
    #: The LIMIT parameter that means "no limit" in this dialect.
    _no_limit: Any = None
    #: queue_position: a job with fewer runnable jobs than this behind it is "near the back"
    #: (queue_position_capped)
    first_count = 64

    async def get(self, job_id: str) -> Job | None:
        async with self._read() as conn:
            row = await self._one(conn, "get", {"id": job_id})
        return job_from_row(row) if row else None

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None:
        async with self._read() as conn:
            row = await self._one(conn, "get_by_prompt_id", {"prompt_id": prompt_id})
        return job_from_row(row) if row else None

    async def unfinished_for_client(
        self, client_id: str, *, owner: str | None = None, limit: int = 500
    ) -> builtins.list[Job]:
        params = {"client_id": client_id, "owner": owner, "limit": max(0, limit)}
        return await self._jobs("unfinished_for_client", params)

    async def queue(
        self, *, owner: str | None = None, limit: int = 1000, bodies: bool = True
    ) -> builtins.list[QueueEntry]:
        params = {"owner": owner, "limit": max(0, limit)}
        async with self._read() as conn:
            rows = await self._all(conn, "queue_active", params)
            rows += await self._all(conn, "queue_queued" if bodies else "queue_queued_bare", params)
        entries: dict[str, QueueEntry] = {}
        for row in rows:  # a job claimed between the two reads (another process's) shows once
            entries.setdefault(row["id"], queue_entry_from_row(row))
        return builtins.list(entries.values())

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        params = {"owner": owner, **page_params(cursor, limit)}
        async with self._read() as conn:
            if statuses is None:
                rows = await self._all(conn, "list", params)
            else:
                # One index range per status, merged: never a scan past other statuses' rows.
                rows = []
                for status in set(statuses):
                    rows += await self._all(conn, "list_status", params | {"status": status.value})
                rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return job_page(rows, limit)

    async def queue_bodies(
        self, job_ids: Sequence[str], *, owner: str | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        if not job_ids:
            return {}
        params = {"ids": self._text_list(builtins.list(dict.fromkeys(job_ids))), "owner": owner}
        async with self._read() as conn:
            rows = await self._all(conn, "queue_bodies", params)
        return {r["id"]: (r["workflow"], r["options"], r["metadata"]) for r in rows}

    async def stamps(
        self, *, statuses: Sequence[JobStatus], owner: str | None = None, limit: int = 1000
    ) -> builtins.list[JobStamp]:
        params = {"owner": owner, "limit": max(0, limit)}
        rows: builtins.list[Row] = []
        async with self._read() as conn:
            for status in set(statuses):  # one index range per status, merged (as `list`)
                rows += await self._all(conn, "stamps_status", params | {"status": status.value})
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return [
            JobStamp(
                id=r["id"],
                status=JobStatus(r["status"]),
                created_at=r["created_at"],
                finished_at=r["finished_at"],
                attempts=int(r["attempts"]),
            )
            for r in rows[: max(0, limit)]
        ]

    async def get_many(self, job_ids: Sequence[str]) -> builtins.list[Job]:
        if not job_ids:
            return []
        params = {"ids": self._text_list(builtins.list(dict.fromkeys(job_ids)))}
        async with self._read() as conn:
            rows = await self._all(conn, "get_many", params)
        return [job_from_row(r) for r in rows]

    async def queue_position(
        self,
        job_id: str,
        *,
        now: float | None = None,
        limit: int | None = None,
        job: Job | None = None,
    ) -> int | None:
        now = clock_or(now)
        if job is None or job.id != job_id:
            job = await self.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return None
        async with self._read() as conn:
            return await self._position_in(conn, job, now, limit)

    async def _position_in(self, conn: Any, job: Job, now: float, limit: int | None) -> int:
        """`queue_position` of queued `job`, on `conn` (a read, or inside a write)."""
        query, params = self._position_query(job, now, limit)
        return position_of(await self._one(conn, query, params), limit)

    def _position_query(self, job: Job, now: float, limit: int | None) -> tuple[str, JSON]:
        """The query (and its parameters) that counts the jobs ahead of queued `job`."""
        params = {
            "now": now,
            "priority": job.priority,
            "fair_tag": job.fair_tag,
            "rank_at": job.rank_at,
            "id": job.id,
            "limit": self._no_limit if limit is None else max(0, limit),
        }
        query = "queue_position_late" if job.next_run_at > now else "queue_position"
        if query == "queue_position" and limit is not None and limit > self.first_count:
            query, params["first"] = "queue_position_capped", self.first_count
        return query, params

    def counts_now(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int] | None:
        return None  # a read waits for its connection (SQLite's loop reads: sqlite_loop)

    async def counts(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        query, params = counts_query(unfinished=unfinished, owner=owner)
        async with self._read() as conn:
            return counts_of(await self._all(conn, query, params))

    async def finished_since(self, after: float, *, limit: int = 1000) -> builtins.list[JobEnd]:
        async with self._read() as conn:
            rows = await self._all(conn, "finished_since", {"after": after, "limit": limit})
        return [
            JobEnd(
                id=str(r["id"]),
                status=JobStatus(r["status"]),
                created_at=float(r["created_at"]),
                started_at=None if r["started_at"] is None else float(r["started_at"]),
                finished_at=float(r["finished_at"]),
            )
            for r in rows
        ]

    async def oldest_queued_at(self, *, owner: str | None = None) -> float | None:
        query, params = "oldest_queued_at", {}
        if owner is not None:
            query, params = "oldest_queued_at_of_owner", {"owner": owner}
        async with self._read() as conn:
            row = await self._one(conn, query, params)
        return float(row["oldest"]) if row and row["oldest"] is not None else None

    async def _jobs(self, name: str, params: JSON) -> builtins.list[Job]:
        async with self._read() as conn:
            return [job_from_row(r) for r in await self._all(conn, name, params)]


def counts_query(*, unfinished: bool, owner: str | None) -> tuple[str, JSON]:
    """The query (and its parameters) of `JobStore.counts`."""
    query = "counts_unfinished" if unfinished else "counts"
    if owner is None:
        return query, {}
    return f"{query}_of_owner", {"owner": owner}


def counts_of(rows: list[Row]) -> dict[JobStatus, int]:
    """Every status's count from a counts query's rows (a status without a row: 0)."""
    counts = dict.fromkeys(JobStatus, 0)
    for row in rows:
        counts[JobStatus(row["status"])] = int(row["n"])
    return counts


def position_of(row: Row | None, limit: int | None) -> int:
    """A position query's answer, within 0..`limit` (>= 0: the job may just have gone)."""
    ahead = max(0, int(row["ahead"])) if row else 0
    return ahead if limit is None else min(ahead, max(0, limit))


__all__ = ["SQLReads", "counts_of", "counts_query", "position_of"]
