"""What a status transition writes: a pure plan every store applies the same way.

`plan()` turns (expected status, event, changes) into the new status and the columns to set;
the memory store applies it to a `Job` with `apply()`, the SQL stores bind it to one UPDATE with a
compare-and-set on the status. Rules beyond the state table:

- leaving `running`/`canceling` clears the lease; going back to `queued` also forgets the worker
  and is runnable at `changes.next_run_at` (default: now);
- reaching a terminal status stamps `finished_at` (default: now); succeeding clears the error an
  earlier attempt left (the event log keeps it);
- a transition that keeps the status (e.g. cancel on a finished job) writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyrun.core.batch import fair_key
from comfyrun.core.job import ACTIVE, JSON, TERMINAL, Job, JobError, JobStatus, NewJob, Progress
from comfyrun.core.state import Event, next_state
from comfyrun.errors import Conflict, NotFound
from comfyrun.store.base import Changes
from comfyrun.store.codec import dump_json, error_to_dict, progress_to_dict


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes of one transition; None means "leave the column as it is"."""

    event: Event
    previous: JobStatus
    status: JobStatus
    error: JobError | None = None
    progress: Progress | None = None
    next_run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    backend: str | None = None
    prompt_id: str | None = None
    execution_started_at: float | None = None
    clear_lease: bool = False
    clear_worker: bool = False
    clear_error: bool = False
    uncount_attempt: bool = False
    extra: JSON | None = None

    @property
    def changes_status(self) -> bool:
        return self.status is not self.previous


def plan(expect: JobStatus, event: Event, changes: Changes | None, now: float) -> Plan:
    """Raises IllegalTransition when the table has no `event` for `expect`."""
    status = next_state(expect, event)
    c = changes or Changes()
    if status is expect:
        return Plan(event=event, previous=expect, status=status)
    leaves_lease = expect in ACTIVE and status not in ACTIVE
    requeued = status is JobStatus.QUEUED
    terminal = status in TERMINAL and status is not JobStatus.EXPIRED
    error = c.error
    if error is not None and not isinstance(error, JobError):
        raise TypeError(f"Changes.error must be a JobError, not {type(error).__name__}")
    return Plan(
        event=event,
        previous=expect,
        status=status,
        error=error,
        progress=c.progress,
        next_run_at=c.next_run_at if c.next_run_at is not None else (now if requeued else None),
        started_at=now if status is JobStatus.RUNNING else None,
        finished_at=c.finished_at if c.finished_at is not None else (now if terminal else None),
        expires_at=c.expires_at,
        backend=c.backend,
        prompt_id=c.prompt_id,
        execution_started_at=c.execution_started_at,
        clear_lease=c.clear_lease or leaves_lease or requeued,
        clear_worker=c.clear_lease or requeued,
        clear_error=status is JobStatus.SUCCEEDED and error is None,
        uncount_attempt=c.uncount_attempt and requeued,
        extra=dict(c.extra),
    )


def apply(job: Job, p: Plan) -> Job:
    """`job` after the plan's writes (for stores that keep `Job` objects)."""
    if not p.changes_status:
        return job
    return job.evolve(
        status=p.status,
        error=p.error if p.error is not None else None if p.clear_error else job.error,
        progress=p.progress if p.progress is not None else job.progress,
        next_run_at=p.next_run_at if p.next_run_at is not None else job.next_run_at,
        started_at=p.started_at if p.started_at is not None else job.started_at,
        finished_at=p.finished_at if p.finished_at is not None else job.finished_at,
        expires_at=p.expires_at if p.expires_at is not None else job.expires_at,
        backend=p.backend if p.backend is not None else job.backend,
        prompt_id=p.prompt_id if p.prompt_id is not None else job.prompt_id,
        execution_started_at=(
            p.execution_started_at
            if p.execution_started_at is not None
            else job.execution_started_at
        ),
        lease_expires_at=None if p.clear_lease else job.lease_expires_at,
        worker_id=None if p.clear_worker else job.worker_id,
        attempts=max(0, job.attempts - 1) if p.uncount_attempt else job.attempts,
    )


def status_event(job: Job, p: Plan) -> JSON:
    """The data of the "status" event appended after `p` turned into `job`."""
    return status_event_of(p, job.attempts, job.next_run_at)


def status_event_of(p: Plan, attempts: int, next_run_at: float) -> JSON:
    """`status_event` of a job `p` left with `attempts` and `next_run_at` (PostgreSQL's
    one-statement end gives it with its attempts taken from the row it updates; it does not
    requeue, the one status whose event carries `next_run_at`)."""
    data: JSON = dict(p.extra or {})
    data.update(
        status=p.status.value,
        previous=p.previous.value,
        event=p.event.value,
        attempts=attempts,
    )
    if p.error is not None:
        data["error"] = error_to_dict(p.error)
    if p.status is JobStatus.QUEUED:
        data["next_run_at"] = next_run_at
    return data


def claimed(job: Job, worker_id: str, lease_s: float, now: float) -> Job:
    """Queued `job` as a claim by `worker_id` takes it (what every store's claim writes)."""
    return job.evolve(
        status=JobStatus.RUNNING,
        attempts=job.attempts + 1,
        worker_id=worker_id,
        lease_expires_at=now + lease_s,
        started_at=now,
    )


def claim_event(job: Job) -> JSON:
    """The data of the "status" event a claim that took `job` appends."""
    return claim_event_of(job.worker_id, job.attempts)


def claim_event_of(worker_id: str | None, attempts: int) -> JSON:
    """`claim_event` of a job claimed by `worker_id` for attempt `attempts` (PostgreSQL's
    one-statement claim gives it with its attempts taken from the row it claims)."""
    return {
        "status": JobStatus.RUNNING.value,
        "previous": JobStatus.QUEUED.value,
        "event": Event.CLAIM.value,
        "attempts": attempts,
        "worker_id": worker_id,
    }


def enqueue_event(job: Job) -> JSON:
    return {"status": JobStatus.QUEUED.value, "previous": None, "event": "enqueue", "attempts": 0}


def enqueued(new: NewJob, now: float, *, batch_id: str | None = None, fair_tag: float = 0.0) -> Job:
    """The queued `Job` a store records for `new` (`batch_id`: of the batch it is queued in)."""
    batch_id = batch_id if batch_id is not None else new.batch_id
    return Job(
        id=new.id,
        workflow=new.workflow,
        status=JobStatus.QUEUED,
        priority=new.priority,
        inputs=tuple(new.inputs),
        options=dict(new.options),
        metadata=dict(new.metadata),
        owner=new.owner,
        max_retries=new.max_retries,
        retry_delay_s=new.retry_delay_s,
        timeout_s=new.timeout_s,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        created_at=now,
        next_run_at=now,
        rank_at=now - max(0.0, new.head_start_s),
        batch_id=batch_id,
        fair_key=fair_key(batch_id, new.owner),
        fair_tag=fair_tag,
        type=new.type,
        params=dict(new.params),
    )


def moved(job: Job, expect: JobStatus, worker_id: str | None) -> Conflict:
    """The Conflict raised when a compare-and-set finds `job` no longer as the caller read it."""
    held = f" held by {worker_id}" if worker_id is not None else ""
    return Conflict(
        f"job {job.id} is {job.status.value} (held by {job.worker_id}), "
        f"expected {expect.value}{held}",
        details={
            "job_id": job.id,
            "status": job.status.value,
            "expected": expect.value,
            "worker_id": job.worker_id,
        },
    )


def not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} not found", details={"job_id": job_id})


def plan_params(p: Plan, job_id: str, worker_id: str | None) -> JSON:
    """The parameters of the SQL stores' `transition` query (JSON columns as JSON text)."""
    return {
        "id": job_id,
        "expect": p.previous.value,
        "worker_id": worker_id,
        "status": p.status.value,
        "error": dump_json(error_to_dict(p.error)) if p.error else None,
        "progress": dump_json(progress_to_dict(p.progress)) if p.progress else None,
        "next_run_at": p.next_run_at,
        "started_at": p.started_at,
        "finished_at": p.finished_at,
        "expires_at": p.expires_at,
        "backend": p.backend,
        "prompt_id": p.prompt_id,
        "execution_started_at": p.execution_started_at,
        "clear_lease": p.clear_lease,
        "clear_worker": p.clear_worker,
        "clear_error": p.clear_error,
        "uncount": 1 if p.uncount_attempt else 0,
    }


__all__ = [
    "Plan",
    "apply",
    "claim_event",
    "claim_event_of",
    "claimed",
    "enqueue_event",
    "enqueued",
    "moved",
    "not_found",
    "plan",
    "status_event",
    "status_event_of",
]
