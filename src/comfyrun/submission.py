"""A submission as the job service takes it (comfyrun.service), and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from comfyrun.core.job import COMFY, JSON, Job


@dataclass(frozen=True, slots=True)
class Submission:
    """A caller's request, already parsed from its wire format."""

    workflow: JSON
    priority: int = 0
    inputs: tuple[JSON, ...] = ()
    options: JSON = field(default_factory=dict)
    metadata: JSON = field(default_factory=dict)
    owner: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    job_id: str | None = None  # a client-chosen id (e.g. ComfyUI's prompt_id); else minted
    #: Whether the caller shows the queue position of the new job (a request that waits for
    #: the job to end does not: one store read less).
    want_position: bool = True
    #: The job's type (comfyrun.handlers) and, for a type other than comfy, its params.
    type: str = COMFY
    params: JSON = field(default_factory=dict)
    #: With `job_id`: a finished job of that id is replaced (ComfyUI overwrites the history of
    #: a prompt_id used again), once this submission has passed its checks.
    replace_finished: bool = False


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    created: bool
    queue_position: int | None


__all__ = ["Submission", "Submitted"]
