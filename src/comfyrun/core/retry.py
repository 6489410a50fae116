"""Retry policy: a pure function of the job and the kind of failure."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from comfyrun.core.job import Job


class FailureKind(enum.StrEnum):
    VALIDATION = "validation"  # ComfyUI rejected the workflow
    NODE_ERROR = "node_error"  # a node raised at run time
    INPUT_ERROR = "input_error"  # an input could not be fetched or placed
    OUT_OF_MEMORY = "out_of_memory"  # a node raised an OOM error
    DISK_FULL = "disk_full"  # a node, or the output storage, found no space left on its disk
    BACKEND_LOST = "backend_lost"  # the backend stopped answering
    CRASH = "crash"  # the backend process died
    TIMEOUT = "timeout"  # the job ran past its timeout
    LEASE_LOST = "lease_lost"  # the worker holding the job died


#: Failures retried only when the job opts in (`options["retry_on_error"]`).
NOT_RETRIED_BY_DEFAULT = frozenset(
    {FailureKind.VALIDATION, FailureKind.NODE_ERROR, FailureKind.INPUT_ERROR}
)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    next_run_at: float = 0.0
    free_memory_first: bool = False


MAX_BACKOFF_S = 300.0


def backoff_delay(base_s: float, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter in [delay/2, delay], capped."""
    delay: float = min(MAX_BACKOFF_S, base_s * (2 ** max(0, attempt - 1)))
    return delay / 2 + rng.random() * delay / 2


def decide(
    job: Job, failure: FailureKind, *, now: float, rng: random.Random | None = None
) -> RetryDecision:
    """Whether `job`, having failed with `failure` on attempt `job.attempts`, runs again."""
    opted_in = bool(job.options.get("retry_on_error"))
    if failure in NOT_RETRIED_BY_DEFAULT and not opted_in:
        return RetryDecision(retry=False)
    retries_used = max(0, job.attempts - 1)
    if retries_used >= job.max_retries:
        return RetryDecision(retry=False)
    delay = backoff_delay(job.retry_delay_s, job.attempts, rng or random.Random())
    return RetryDecision(
        retry=True,
        next_run_at=now + delay,
        free_memory_first=failure is FailureKind.OUT_OF_MEMORY,
    )


def failed_on(job: Job) -> str | None:
    """The backend the job's last attempt failed on, which its retry ranks after the other
    backends of the same load (`core.placement`); None for a first attempt. (A job requeued
    because its worker stopped keeps the error of an earlier failure, if any, and names the
    backend of the attempt that was cut short: its retry may then go elsewhere, and still
    follows a prompt left running there, by prompt id.)"""
    if job.error is None:
        return None
    return job.backend


__all__ = [
    "NOT_RETRIED_BY_DEFAULT",
    "FailureKind",
    "RetryDecision",
    "backoff_delay",
    "decide",
    "failed_on",
]
