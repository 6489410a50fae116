"""The job record and its parts: plain frozen data, no I/O.

Times are seconds since the epoch (float, UTC); the API layer formats them. A job's workflow is
always an API-format ComfyUI prompt by the time it is stored (UI-format graphs are converted at
submission).
"""

from __future__ import annotations

import enum
import hashlib
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from comfyrun.core.ids import uuid7

JSON = dict[str, Any]

#: The type of a job that runs a ComfyUI workflow (every job before handlers existed).
COMFY = "comfy"
#: The option holding a ComfyUI prompt's `partial_execution_targets`: its output nodes to run.
PARTIAL_TARGETS = "partial_execution_targets"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


#: States a job can leave only through expiry or deletion.
TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED}
)
#: The names of TERMINAL, as status events carry them.
TERMINAL_NAMES: frozenset[str] = frozenset(status.value for status in TERMINAL)
#: States in which a worker holds the job under a lease.
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.RUNNING, JobStatus.CANCELING})


class OutputType(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    TEXT = "text"
    FILE = "file"
    LATENT = "latent"


@dataclass(frozen=True, slots=True)
class Progress:
    """A complete progress snapshot (each one replaces the last)."""

    value: float = 0.0
    nodes_done: int = 0
    nodes_total: int = 0
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed. `code` is machine-readable (e.g. node_execution_error)."""

    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None
    details: Any = None


@dataclass(frozen=True, slots=True)
class Output:
    """One committed output file (or value) of a job."""

    node_id: str
    name: str
    type: OutputType
    content_type: str
    size_bytes: int | None = None
    hash: str | None = None  # "blake3:<hex>"
    url: str | None = None
    url_expires_at: float | None = None
    storage_key: str | None = None  # where the output storage keeps it
    data_base64: str | None = None  # inline outputs
    text: str | None = None  # text outputs
    id: str | None = None  # asset id, when the output is also an asset
    meta: JSON = field(default_factory=dict)  # e.g. ComfyUI's filename/subfolder/type


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    workflow: JSON
    status: JobStatus = JobStatus.QUEUED
    priority: int = 0
    inputs: tuple[JSON, ...] = ()
    options: JSON = field(default_factory=dict)  # output storage, webhook, return_base64 ...
    metadata: JSON = field(default_factory=dict)
    owner: str | None = None
    attempts: int = 0
    max_retries: int = 0
    retry_delay_s: float = 2.0
    timeout_s: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    created_at: float = 0.0
    next_run_at: float = 0.0
    started_at: float | None = None  # claimed by a worker (this attempt)
    finished_at: float | None = None
    expires_at: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    backend: str | None = None
    prompt_id: str | None = None
    progress: Progress | None = None
    outputs: tuple[Output, ...] = ()
    error: JobError | None = None
    batch_id: str | None = None
    #: fairness at equal priority (set by the store; see comfyrun.core.batch)
    fair_key: str = ""
    fair_tag: float = 0.0
    #: Claim order within one priority and fair tag: the submission time, less the head start
    #: a job estimated to run longer gets (see comfyrun.core.queue_order).
    rank_at: float = 0.0
    #: When ComfyUI started this attempt's prompt (its execution_start); None while the prompt
    #: waits (in comfyrun's queue or held in a backend's).
    execution_started_at: float | None = None
    #: Which handler runs the job (comfyrun.handlers); "comfy" runs `workflow` on ComfyUI.
    type: str = COMFY
    #: A handler job's parameters (a comfy job has its workflow instead).
    params: JSON = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def execution_start(self) -> float | None:
        """When ComfyUI started the prompt of this attempt (one of an earlier attempt, from
        before this attempt's claim, does not count). A handler job starts when claimed."""
        return execution_start(self.type, self.started_at, self.execution_started_at)

    @property
    def waiting(self) -> bool:
        """Claimed, but its prompt not started by ComfyUI yet: shown as `queued`."""
        return self.status is JobStatus.RUNNING and self.execution_start is None

    def evolve(self, **changes: Any) -> Job:
        """A copy with `changes` (as `dataclasses.replace`, in less than half its time: the
        fields are copied as they are, without a call of `__init__`, which a job's
        already-checked values do not need; ~2 % of an enqueue's CPU went to `replace`)."""
        values = list(_job_values(self))
        for name, value in changes.items():
            try:
                values[_JOB_INDEX[name]] = value
            except KeyError:
                raise TypeError(f"Job has no field {name!r}") from None
        new: Job = object.__new__(Job)
        for put, value in zip(_JOB_SETTERS, values, strict=True):
            put(new, value)
        return new


_JOB_NAMES = tuple(f.name for f in fields(Job))
_job_values = operator.attrgetter(*_JOB_NAMES)
_JOB_INDEX = {name: i for i, name in enumerate(_JOB_NAMES)}
#: Each field's slot, set past the frozen class's `__setattr__` (as its `__init__` does).
_JOB_SETTERS = tuple(Job.__dict__[name].__set__ for name in _JOB_NAMES)


def execution_start(
    job_type: str, started_at: float | None, execution_started_at: float | None
) -> float | None:
    """`Job.execution_start` from the three columns it depends on (a listing that reads only
    some of a job's columns tells a held prompt from a running one with it)."""
    if job_type != COMFY:
        return started_at
    if execution_started_at is None or (
        started_at is not None and execution_started_at < started_at
    ):
        return None
    return execution_started_at


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a caller asks for; the store turns it into a `Job`."""

    workflow: JSON
    priority: int = 0
    inputs: tuple[JSON, ...] = ()
    options: JSON = field(default_factory=dict)
    metadata: JSON = field(default_factory=dict)
    owner: str | None = None
    max_retries: int = 0
    retry_delay_s: float = 2.0
    timeout_s: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    batch_id: str | None = None
    #: Seconds earlier than its submission the job ranks in claim order (core.queue_order).
    head_start_s: float = 0.0
    type: str = COMFY
    params: JSON = field(default_factory=dict)
    #: time-ordered (core.ids): the store's indexes of job ids grow at one end
    id: str = field(default_factory=uuid7)


def request_fingerprint(body: Any) -> str:
    """A stable hash of a request body, for idempotency checks."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_prompt_id() -> str:
    """A canonical UUID for a ComfyUI prompt; minted per attempt so every step can reconcile.
    Time-ordered, as job ids are: the store indexes prompt ids too."""
    return uuid7()


def may_end(kind: str, data: Mapping[str, Any]) -> bool:
    """Whether an event of `kind` with `data` may have ended its job: a status event naming a
    final status, or naming none (then the job itself tells)."""
    if kind != "status":
        return False
    status = data.get("status")
    return not isinstance(status, str) or status in TERMINAL_NAMES
