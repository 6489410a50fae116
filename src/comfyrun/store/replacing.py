"""Replacing a finished job with a new one of its id (RunPod's /retry, a ComfyUI prompt_id used
again): `JobStore.enqueue(new, replacing=stamp)` deletes the finished job, with its events, in
the transaction that stores the new one, and only while the job is as the caller read it (its
JobStamp). So a crash between the two loses nothing (both are written, or neither), of two
requests that replace one job at once, on one API node or on two, one is refused (Conflict),
and a read of the job finds the old one or the new one, never none. The job's output files
are not the store's: the caller removes them once the replacement has committed.

What every store shares: the checks before anything is written, the refusal, and the SQL
stores' removal inside their write transaction.
"""

from __future__ import annotations

from typing import Any

from comfyrun.core.job import JSON, TERMINAL, Job, NewJob
from comfyrun.errors import Conflict
from comfyrun.store.base import JobStamp
from comfyrun.store.sqldialect import SQLDialect


def check(new: NewJob, stamp: JobStamp) -> None:
    """Before anything is written: `stamp` is of `new`'s id, and of a finished job (a job
    still queued or running is not replaced: Conflict)."""
    if stamp.id != new.id:
        raise ValueError(f"job {new.id} cannot replace job {stamp.id}")
    if stamp.status not in TERMINAL:
        raise Conflict(
            f"job {stamp.id} is still {stamp.status.value}", details={"job_id": stamp.id}
        )


def as_read(job: Job | None, stamp: JobStamp) -> bool:
    """Whether `job` (as stored now) is still the one `stamp` was taken of."""
    return job is not None and JobStamp.of(job) == stamp


def changed(stamp: JobStamp) -> Conflict:
    """The refusal of a replacement whose job is not as it was read any more."""
    return Conflict(
        f"job {stamp.id} is being submitted again already, or changed since it was read",
        details={"job_id": stamp.id},
    )


async def remove_as_read(store: SQLDialect, conn: Any, stamp: JobStamp) -> None:
    """In a SQL store's write transaction, before the new job's row is inserted: the finished
    job deleted, only as it was read (delete_as_read: the row's lock taken, a replacement
    committed meanwhile by another transaction makes it delete nothing), then its events;
    Conflict when it was not as read (the transaction rolls back)."""
    if await store._run(conn, "delete_as_read", _params(stamp)) != 1:
        raise changed(stamp)
    await store._run(conn, "delete_events", {"id": stamp.id})


def _params(stamp: JobStamp) -> JSON:
    return {
        "id": stamp.id,
        "status": stamp.status.value,
        "created_at": stamp.created_at,
        "finished_at": stamp.finished_at,
        "attempts": stamp.attempts,
    }


__all__ = ["as_read", "changed", "check", "remove_as_read"]
