"""The durable job queue's interface. Every store (memory, SQLite, PostgreSQL) implements it with
the same semantics and passes the same contract suite (tests/contract/store/).

Delivery is at least once: a claim is a lease; a worker that stops renewing it loses the job to
`sweep_expired_leases`, and the job runs again. Status changes are compare-and-set on the status
the caller read, with the next status taken from `comfyrun.core.state`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from comfyrun.core.job import JSON, Job, JobStatus, NewJob, Output, Progress
from comfyrun.core.state import Event
from comfyrun.store.job_counts import JobCounts
from comfyrun.store.queue_watch import QueueHeard, QueueMove, QueueWatchers, WorkCounts, queue_move
from comfyrun.store.records import (
    COMFY_CLIENT_ID,
    Changes,
    ClaimChoice,
    ClaimNote,
    HandOff,
    JobEnd,
    JobEvent,
    JobPage,
    JobStamp,
    QueueEntry,
)
from comfyrun.store.retrying import RetryCounts
from comfyrun.store.side_stores import (
    BatchStore,
    CatalogStore,
    KeyStore,
    WebhookOutbox,
    WorkerRegistry,
)
from comfyrun.store.writable import CanCommit


def nothing_to_stop() -> None:
    """What `watch_new_work` returns in a store that calls nothing."""


class JobStore(
    KeyStore,
    WebhookOutbox,
    WorkerRegistry,
    CatalogStore,
    BatchStore,
    CanCommit,
    RetryCounts,
    JobCounts,
    Protocol,
):
    """A durable priority queue of jobs with leases, events and idempotency."""

    async def open(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers (readiness)."""

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        """Store a queued job; returns (job, created).

        With an idempotency key: the same key and request_hash (within 24 h) returns the existing
        job and created=False; the same key with another hash raises IdempotencyKeyReuse.

        `replacing`: the stamp of the finished job of `new`'s id as the caller read it; that
        job, with its events, is deleted in the transaction that stores `new` (never one
        without the other), only while it is still as read (else Conflict, nothing written:
        another request replaced it first, or it expired or went meanwhile). Its files are the
        caller's (comfyrun.store.replacing)."""

    async def enqueue_counted(
        self,
        new: NewJob,
        *,
        limit: int | None = None,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool, int | None]:
        """`enqueue`, and the job's `queue_position` (counted up to `limit`; None when it is
        not queued), read in the enqueue's own transaction: one trip to the store, and the
        position the job had when it was committed."""

    async def enqueue_claimed(
        self,
        new: NewJob,
        hand_off: HandOff,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        """`enqueue`, and when no other job is queued (runnable or waiting for its time), the
        new job claimed for `hand_off` in the same transaction: returned running (attempts 1,
        its lease set, the claim's events logged), the work token not moved. Otherwise, or for
        an idempotent replay, exactly `enqueue`."""

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
        """Atomically take the best runnable queued job (highest priority, then oldest, with
        next_run_at <= now) for `worker_id`: status running, attempts+1, lease set. `note`
        may add one event to the claim's transaction (e.g. the prompt about to be sent).
        With `choice`, the job it picks among the first runnable ones is taken instead.
        `types`: only jobs of these types (None: any type; `choice` then sees only those)."""

    async def renew(
        self, job_id: str, worker_id: str, lease_s: float, *, now: float | None = None
    ) -> bool:
        """Extend the lease; False if the worker no longer holds the job."""

    async def transition(
        self,
        job_id: str,
        event: Event,
        *,
        expect: JobStatus,
        changes: Changes | None = None,
        now: float | None = None,
        worker_id: str | None = None,
    ) -> Job:
        """Apply `event` if the job is still in `expect` (compare-and-set).

        With `worker_id`, the job must also still be held by that worker (a fence: a worker
        whose lease was swept and whose job was claimed again gets Conflict, not a double
        finish). Raises NotFound, IllegalTransition (table says no) or Conflict (status moved
        on). Appends a "status" event to the job's log when the status changes.
        """

    async def record_placement(
        self,
        job_id: str,
        worker_id: str,
        *,
        backend: str,
        prompt_id: str,
        execution_started_at: float | None,
    ) -> bool:
        """Note the backend and prompt of the running attempt, and when ComfyUI started that
        prompt (None: submitted, not started). False when `worker_id` no longer holds the job."""

    async def next_priority(
        self, *, now: float | None = None, types: Sequence[str] | None = None
    ) -> int | None:
        """The priority of the job `claim` (with the same `types`) would take now, or None
        when none is runnable."""

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        """Store the latest progress snapshot (and append a "progress" event)."""

    async def add_output(self, job_id: str, output: Output) -> Job:
        """Commit one output to the job (and append an "output" event)."""

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent: ...

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]: ...

    async def wait_for_event(
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]:
        """Events after `after_id`, waiting up to `timeout` for the first one (no sleep-polling:
        woken by the store's own notifications). `ending`: the caller waits for an event that
        may end the job (a status event); a store that can tell from its notifications need
        not look at the job's events for others (it may still return them), and may wait on
        past them for one that may end the job (returning them with it; a log read from its
        start, `after_id` 0, that holds nothing is returned at once: no such job). `held`: the
        caller's worker holds the job, claimed through this store, and waits for a change of
        its status (a run's cancel watch); a store whose notifications say the job's status has
        not changed since that claim may skip the look, and return once it changes (the log
        then read from `after_id`, what was there before included)."""

    async def wait_for_end(
        self, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        """The job once it is in a final status, or as it is when `timeout` passes; None when
        there is no such job (or, with `owner`, it is another owner's: at once). Woken by the
        store's own notifications, listening before it looks, so no end slips between. A
        store may skip the first look where its notifications say the job has not ended (a
        job it queued itself, heard of since)."""

    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        """Return when a job may have become claimable, or after `timeout`. `since`: the
        `work_token` (of the same `types`) the caller read before it last found nothing; when
        the token moved since, return at once (a wake-up that came before this call is not
        lost). `types`: only work of these job types counts (a store that cannot tell a job's
        type from its wake-ups counts any)."""

    def watch_new_work(self, heard: Callable[[str, str | None], None]) -> Callable[[], None]:
        """Call `heard(job_id, job_type)` for each job that becomes claimable (queued, or put
        back) or is created claimed (handed off to a worker of the process that took it),
        whichever process made it so, as far as this store hears of other processes'
        changes; returns the function that stops the calls. A store one process holds alone
        calls nothing (that process saw the job itself): PostgreSQL calls it from its
        listener, so that an API node learns of a ComfyUI prompt posted to another
        (api.compat.comfy_elsewhere). `job_type` is None where the store cannot tell it."""
        ...

    def watch_queue(self, heard: Callable[[str, QueueMove], None]) -> Callable[[], None]:
        """Call `heard(job_id, move)` after each committed change of a job's place in the
        queue: it joined it (queued, created claimed, put back), started (claimed) or ended;
        whichever process made it, as far as this store hears of other processes' changes
        (PostgreSQL: every node's, its own included, from its listener; a store one process
        holds alone: its own, as they commit). `ENDED` may be said of a write that did not end
        the job (where the store cannot tell), never left out of one that did. Returns the
        function that stops the calls. Called on the event loop, it must be quick and do no
        I/O (ComfyUI's face: its `status` broadcast to every open socket, when one is open)."""
        ...

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        """A number that changes whenever a job (of one of `types`, when given) may have become
        claimable (an enqueue, a job put back, another process's commit seen): read before a
        claim that found nothing, an unchanged token means a new claim would find nothing too,
        until time makes a waiting job runnable (what `wait_for_work`'s timeout is for). None:
        unknown, claim anyway."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def get_by_prompt_id(self, prompt_id: str) -> Job | None: ...

    async def unfinished_for_client(
        self, client_id: str, *, owner: str | None = None, limit: int = 500
    ) -> list[Job]:
        """The queued and running jobs submitted with this ComfyUI client id (their
        `comfy_client_id` metadata), newest first: what a /ws connecting with it follows.
        Found by an index, however many other jobs are unfinished."""
        ...

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first, cursor-paginated."""

    async def stamps(
        self, *, statuses: Sequence[JobStatus], owner: str | None = None, limit: int = 1000
    ) -> builtins.list[JobStamp]:
        """The newest jobs of these statuses (of `owner`, when given), as `list` orders them,
        at most `limit`: their stamps only (ComfyUI's history listing, each entry rendered
        once and read again only when its stamp changed)."""
        ...

    async def get_many(self, job_ids: Sequence[str]) -> builtins.list[Job]:
        """The jobs of these ids that exist, in no particular order."""
        ...

    async def finished_since(self, after: float, *, limit: int = 1000) -> builtins.list[JobEnd]:
        """The jobs that ended at or after `after` (their finished_at), in the order they
        ended (then by id), at most `limit`: what ended since a watermark, however long ago
        each was submitted (the metrics' histograms). Read along the finished_at index,
        without the rows' JSON."""
        ...

    async def queue(
        self, *, owner: str | None = None, limit: int = 1000, bodies: bool = True
    ) -> builtins.list[QueueEntry]:
        """The unfinished jobs in the order they run: the running and canceling ones, claimed
        first first, then the queued ones in claim order (the head of the queue first); at
        most `limit` of each. Read along the claim index: the queued part costs what it
        lists, not the whole queue (with `owner`, the others' jobs it passes over too).
        Without `bodies`, the queued ones come without their workflow, options and metadata
        (`raw` None): a listing that has them rendered reads only the others' (`queue_bodies`)."""
        ...

    async def queue_bodies(
        self, job_ids: Sequence[str], *, owner: str | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        """The workflow, options and metadata (as `QueueEntry.raw`) of the jobs of these ids
        that exist (and are `owner`'s, when given)."""
        ...

    async def queue_position(
        self,
        job_id: str,
        *,
        now: float | None = None,
        limit: int | None = None,
        job: Job | None = None,
    ) -> int | None:
        """0-based position among queued jobs in claim order; None if not queued.

        Counting costs O(position) (~0.3-0.6 s at the back of a million queued jobs); with
        `limit` the count stops there and the answer is min(position, limit). `job`: that job
        as the caller has just enqueued or read it, counted from without reading it again."""

    async def oldest_queued_at(self, *, owner: str | None = None) -> float | None:
        """When the oldest queued job (of `owner`, an API key, when given) was submitted."""

    async def sweep_expired_leases(self, *, now: float | None = None) -> builtins.list[Job]:
        """Jobs whose lease ran out: requeued (lease_lost) if retries remain, else failed."""

    async def requeue_stuck(
        self, older_than_s: float, *, now: float | None = None
    ) -> builtins.list[Job]:
        """Admin: running jobs started more than `older_than_s` ago go back to queued."""

    async def expire_finished(self, *, now: float | None = None) -> builtins.list[Job]:
        """Finished jobs whose expires_at has passed become expired."""

    async def delete(self, job_id: str) -> bool:
        """Delete a job and its events. Callers remove its files first."""

    async def delete_finished_before(self, cutoff: float) -> builtins.list[Job]:
        """Delete finished (and expired) jobs that finished before `cutoff`; returns them.
        Batches that ended before `cutoff` go too, with their events."""


async def end_by_events(
    store: JobStore, job_id: str, timeout: float, owner: str | None
) -> Job | None:
    """`wait_for_end` made of `get` and `wait_for_event` (a store with nothing better): the job
    read, and read again after each new event of it until it is final or `timeout` passes."""
    deadline = time.monotonic() + timeout
    after = 0
    while True:
        job = await store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        remaining = deadline - time.monotonic()
        if job.terminal or remaining <= 0:
            return job
        # the log from where the last read of it ended (the first: all of it, at once), so an
        # end logged since the job was read is found
        events = await store.wait_for_event(job_id, after, remaining)
        if events:
            after = events[-1].id


def clock_or(now: float | None) -> float:
    """`now`, or the wall clock's time when the caller gave none (the stores' `now=` keyword)."""
    return time.time() if now is None else now


__all__ = [
    "COMFY_CLIENT_ID",
    "BatchStore",
    "CatalogStore",
    "Changes",
    "ClaimChoice",
    "ClaimNote",
    "HandOff",
    "JobEnd",
    "JobEvent",
    "JobPage",
    "JobStamp",
    "JobStore",
    "KeyStore",
    "QueueEntry",
    "QueueHeard",
    "QueueMove",
    "QueueWatchers",
    "WebhookOutbox",
    "WorkCounts",
    "WorkerRegistry",
    "clock_or",
    "end_by_events",
    "nothing_to_stop",
    "queue_move",
]
