"""What the stores read and write besides a job itself: an event of its log, a page of a
listing, a job's end or stamp, a queue entry, the changes a transition makes, and what a claim
is told (a note to append, a choice among the runnable jobs, a hand-off at enqueue)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyrun.core.job import JSON, Job, JobStatus, Output, Progress


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's durable event log (what SSE streams and resumes from).

    kind: "status" | "progress" | "output" | "log" | "preview"; `id` grows monotonically per store.
    """

    id: int
    job_id: str
    kind: str
    data: JSON
    created_at: float


#: The metadata key of the ComfyUI client id a prompt was submitted for (the ComfyUI face);
#: the stores index it among unfinished jobs (`unfinished_for_client`, jobs_comfy_client).
COMFY_CLIENT_ID = "comfy_client_id"


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: builtins.list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class JobEnd:
    """A job that ended, as `finished_since` reads it: when it was submitted, started (this
    attempt's claim) and ended, without the rest of its row."""

    id: str
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float


@dataclass(frozen=True, slots=True)
class JobStamp:
    """What tells one version of a job from another, as `stamps` lists it without the rest
    of its row: something rendered from the job stands while its stamp does."""

    id: str
    status: JobStatus
    created_at: float
    finished_at: float | None
    attempts: int

    @classmethod
    def of(cls, job: Job) -> JobStamp:
        return cls(job.id, job.status, job.created_at, job.finished_at, job.attempts)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """An unfinished job as a listing of the queue shows it, read from the few columns that
    takes (ComfyUI's GET /queue lists up to a thousand on each change of the queue; decoding
    whole rows was most of its cost). The workflow, options and metadata are decoded when
    asked for: a listing that rendered a queued job before renders it again from its id. A
    queued job listed without them (`queue(bodies=False)`) has `raw` None until
    `queue_bodies` reads them."""

    id: str
    status: JobStatus
    #: Claimed, its prompt not started by ComfyUI yet (held in a backend's queue).
    waiting: bool
    #: The nodes whose outputs are committed so far.
    output_nodes: tuple[str, ...]
    #: When the job was submitted (a job submitted again under the same id is another job).
    created_at: float
    #: The workflow, options and metadata as read: JSON text, or values already decoded
    #: (None: not read).
    raw: tuple[Any, Any, Any] | None

    @property
    def workflow(self) -> JSON:
        return _json_value(self._raw[0]) or {}

    @property
    def options(self) -> JSON:
        return dict(_json_value(self._raw[1]) or {})

    @property
    def metadata(self) -> JSON:
        return dict(_json_value(self._raw[2]) or {})

    @property
    def _raw(self) -> tuple[Any, Any, Any]:
        if self.raw is None:
            raise ValueError(f"job {self.id} was listed without its workflow")
        return self.raw


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class Changes:
    """Fields a transition may set alongside the new status (None = leave as is)."""

    error: Any = None  # JobError
    progress: Progress | None = None
    next_run_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    backend: str | None = None
    prompt_id: str | None = None
    clear_lease: bool = False
    extra: JSON = field(default_factory=dict)
    #: When ComfyUI started the prompt, when the run has not recorded it yet (a short job
    #: records it with its end instead of in a write of its own).
    execution_started_at: float | None = None
    #: Outputs committed in the same transaction as the status change (each with its "output"
    #: event, before the "status" one): a job succeeds with its outputs or not at all.
    outputs: tuple[Output, ...] = ()
    #: Back to the queue with the attempt not counted (attempts - 1): the run never reached
    #: ComfyUI (its POST /prompt could not be sent), so the job has not been tried.
    uncount_attempt: bool = False


@dataclass(frozen=True, slots=True)
class ClaimNote:
    """An event a claim appends in its own transaction, after its status event, when it takes
    the job for its first attempt (a later attempt's claim appends none): what the first
    attempt is about to do (the prompt it submits), written before it does it."""

    kind: str
    data: JSON

    def of(self, job: Job) -> tuple[str, JSON] | None:
        """(kind, data) for the claim that took `job`, or None: not its first attempt."""
        return (self.kind, self.data) if job.attempts == 1 else None


@dataclass(frozen=True, slots=True)
class ClaimChoice:
    """Lets a claim take another job than the best one: `pick` is given the first `window`
    runnable queued jobs in claim order (the best first) and returns the index of the one to
    take (an index out of range takes the best), or None to take none of them (the claim then
    finds nothing: a worker whose staging set is full takes no job that must download first,
    dispatch.staging). Called inside the claim's transaction: it must be quick and do no I/O."""

    window: int
    pick: Callable[[Sequence[Job]], int | None]

    def chosen(self, candidates: Sequence[Job]) -> Job | None:
        index = self.pick(candidates)
        if index is None:
            return None
        return candidates[index] if 0 <= index < len(candidates) else candidates[0]


@dataclass(frozen=True, slots=True)
class HandOff:
    """A worker of this process with a free backend, ready to take a job as it is enqueued
    (`JobStore.enqueue_claimed`): the claim it would make next, made in the enqueue's own
    transaction. `note`: as `claim`'s.

    `decided`, when given, may be called once on the event loop with `(job, created)` as the
    enqueue's transaction decided them, before that transaction commits, by a store whose
    commit can be overlapped (SQLite: the store's thread runs the fsync while the loop goes
    on; `enqueue_claimed` still returns only after it). A store that cannot tell early calls
    nothing. A caller that started work on that word must undo it if `enqueue_claimed` then
    raises: nothing was stored."""

    worker_id: str
    lease_s: float
    note: ClaimNote | None = None
    decided: Callable[[Job, bool], None] | None = field(default=None, compare=False)


__all__ = [
    "COMFY_CLIENT_ID",
    "Changes",
    "ClaimChoice",
    "ClaimNote",
    "HandOff",
    "JobEnd",
    "JobEvent",
    "JobPage",
    "JobStamp",
    "QueueEntry",
]
