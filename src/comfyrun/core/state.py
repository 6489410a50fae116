"""The job state machine: one transition table, no I/O.

Theory of operation
-------------------
A job is created `queued`. A worker `claim`s it (→ `running`) under a lease it must renew. From
`running` the job ends `succeeded` or `failed`, or goes back to `queued` through `retry` (the
retry policy in `core.retry` decides which) or `lease_lost` (its worker died) or `requeue` (an
admin reset a stuck job). `cancel` takes a queued job straight to `canceled`, and a running one to
`canceling` until the backend confirms the interrupt, and then `canceled` however its run ends.
Finished jobs become `expired` once their retention passes.

Rules:
- `next_state` is total over the table: an event not listed for a state raises
  `IllegalTransition` and changes nothing.
- `cancel` on a finished job is a legal no-op (cancel is idempotent for callers).
- A failure while `canceling` ends the job `canceled`: the user asked for it to stop and it did.
- So does a success (a prompt that finished before the interrupt landed, or whose end was being
  written as the cancel came): the cancel was answered `canceling`, which promises `canceled`
  (v2: running → canceling → canceled); its outputs stay with it, not as a success. A cancel
  that comes once the end is written finds the job finished and answers it as it is.
- Stores apply a transition with a compare-and-set on the status they read; this table is the
  only place that says which status comes next.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from comfyrun.core.job import JobStatus
from comfyrun.errors import IllegalTransition


class Event(enum.StrEnum):
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    RETRY = "retry"
    CANCEL = "cancel"
    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"
    REQUEUE = "requeue"
    EXPIRE = "expire"


Q, R, C = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING
S, F, X, E = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED

TRANSITIONS: Mapping[tuple[JobStatus, Event], JobStatus] = {
    (Q, Event.CLAIM): R,
    (Q, Event.CANCEL): X,
    (R, Event.SUCCEED): S,
    (R, Event.FAIL): F,
    (R, Event.RETRY): Q,
    (R, Event.CANCEL): C,
    (R, Event.LEASE_LOST): Q,
    (R, Event.REQUEUE): Q,
    (C, Event.CANCEL): C,
    (C, Event.CANCELED): X,
    (C, Event.SUCCEED): X,
    (C, Event.FAIL): X,
    (C, Event.RETRY): X,
    (C, Event.LEASE_LOST): X,
    (C, Event.REQUEUE): X,
    (S, Event.CANCEL): S,
    (F, Event.CANCEL): F,
    (X, Event.CANCEL): X,
    (E, Event.CANCEL): E,
    (S, Event.EXPIRE): E,
    (F, Event.EXPIRE): E,
    (X, Event.EXPIRE): E,
}


def next_state(status: JobStatus, event: Event) -> JobStatus:
    """The status after `event` in `status`; raises IllegalTransition if the table has none."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(
            f"event {event.value!r} is not allowed for a {status.value} job",
            details={"status": status.value, "event": event.value},
        ) from None


def allowed(status: JobStatus, event: Event) -> bool:
    return (status, event) in TRANSITIONS


__all__ = ["TRANSITIONS", "Event", "allowed", "next_state"]
