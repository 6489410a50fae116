"""The SQL stores' claims (mixed into SQLStore): a worker takes the next runnable job (the head
of the claim index, one a `ClaimChoice` picks among the first runnable, or among some types' jobs)
with a lease it then renews, and the priority of the job a claim would take next."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, overload

from comfyrun.core.job import COMFY, JSON, Job
from comfyrun.store import transition
from comfyrun.store.base import ClaimChoice, ClaimNote, QueueMove, clock_or
from comfyrun.store.codec import job_from_row
from comfyrun.store.sqldialect import Row, SQLDialect

#: Looks a claim takes for a job when the one it picked was taken by another claimer between its
#: look and its UPDATE (only PostgreSQL's claimers run side by side).
CLAIM_TRIES = 3


class DecodedOnUse(Sequence[Job]):
    """A claim window's rows as jobs, each decoded (its workflow and options parsed) when it is
    first looked at: most choices look at the first few of up to `window` rows."""

    __slots__ = ("_jobs", "_rows")

    def __init__(self, rows: Sequence[Row]) -> None:
        self._rows = rows
        self._jobs: builtins.list[Job | None] = [None] * len(rows)

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Job]: ...

    def __getitem__(self, index: int | slice) -> Job | Sequence[Job]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._rows)))]
        job = self._jobs[index]
        if job is None:
            job = self._jobs[index] = job_from_row(self._rows[index])
        return job


class SQLClaims(SQLDialect):
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
        type-led index), merged in claim order, then taken by id if it is still queued. The
        window is not locked (PostgreSQL: locking it made the other workers' claims meanwhile
        skip all of it and find nothing): a job another claimer took in between is looked for
        again, up to CLAIM_TRIES times."""
        if types is None and choice is None:  # the head, taken in one statement
            return await self._one(conn, "claim", params)
        for _ in range(CLAIM_TRIES):
            rows = await self._claim_window(conn, params, types, choice)
            if not rows:
                return None
            if choice is None:
                picked = rows[0]["id"]
            else:
                # decoded as the choice looks at them: a choice that takes the first job it
                # likes (a full staging set's: the first that needs no download) decodes one
                # row, not `window`
                chosen = choice.chosen(DecodedOnUse(rows))
                if chosen is None:  # none of them (the transaction changes nothing)
                    return None
                picked = chosen.id
            row = await self._one(conn, "claim_id", params | {"id": picked})
            if row is not None:
                return row
        return None

    async def _claim_window(
        self,
        conn: Any,
        params: JSON,
        types: Sequence[str] | None,
        choice: ClaimChoice | None,
    ) -> builtins.list[Row]:
        """The runnable jobs a claim chooses among, in claim order (see `_claim_row`)."""
        size = max(1, choice.window) if choice is not None else 1
        if types is None:
            return await self._all(conn, "claim_window", {"now": params["now"], "window": size})
        rows: builtins.list[Row] = []
        for kind in sorted(set(types)):
            query = "claim_window_comfy" if kind == COMFY else "claim_window_type"
            found = {"type": kind, "now": params["now"], "window": size}
            rows += await self._all(conn, query, found)
        rows.sort(key=lambda r: (-r["priority"], r["fair_tag"], r["rank_at"], r["id"]))
        return rows[:size]

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        params = {"id": job_id, "worker_id": worker_id, "lease_expires_at": clock_or(now) + lease_s}
        async with self._write_one() as conn:
            return await self._run(conn, "renew", params) == 1

    async def _claimed(self, conn: Any, row: Row, note: ClaimNote | None, now: float) -> Job:
        """The job a claim just took, with the claim's events (and the note's) logged."""
        job = job_from_row(row)
        await self._log_claim(conn, job, note, now)
        return job

    async def _log_claim(self, conn: Any, job: Job, note: ClaimNote | None, now: float) -> None:
        """A claim's events: its status change, then the note's event if it has one."""
        await self._append_all(conn, job.id, claim_events(job, note), now)

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


def claim_events(job: Job, note: ClaimNote | None) -> builtins.list[tuple[str, JSON]]:
    """A claim's events (kind, data): its status change, then the note's event if it has one."""
    events: builtins.list[tuple[str, JSON]] = [("status", transition.claim_event(job))]
    extra = note.of(job) if note is not None else None
    if extra is not None:
        events.append(extra)
    return events


__all__ = ["DecodedOnUse", "SQLClaims", "claim_events"]
