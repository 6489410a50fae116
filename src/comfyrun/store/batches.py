"""What every store writes for batches, in one place: the queued jobs of a new batch, and the
data of the events a batch logs (under the batch's id in the event log)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from comfyrun.core.batch import COMPLETED_EVENT, Batch, BatchStatus, NewBatch, ending, fair_tag
from comfyrun.core.job import JSON, Job, JobStatus, NewJob
from comfyrun.core.state import Event
from comfyrun.errors import NotFound
from comfyrun.store import transition

CREATED_EVENT = "batch.created"

#: created_at steps between a batch's jobs, so item order is claim and listing order
ITEM_TICK_S = 1e-6


def created(
    batch: NewBatch, jobs: Sequence[NewJob], now: float, first_tag: float = 0.0
) -> tuple[Batch, list[Job]]:
    """The batch record and its queued jobs, fair tags from `first_tag` on (one each)."""
    record = Batch(
        id=batch.id,
        workflow=batch.workflow,
        version=batch.version,
        total=len(jobs),
        options=dict(batch.options),
        metadata=dict(batch.metadata),
        owner=batch.owner,
        created_at=now,
    )
    queued = [
        transition.enqueued(new, now + i * ITEM_TICK_S, batch_id=batch.id, fair_tag=first_tag + i)
        for i, new in enumerate(jobs)
    ]
    return record, queued


def first_tag(head: float | None) -> float:
    """A new batch is a group with nothing queued yet: it starts at the head of the queue."""
    return fair_tag(head, None)


def cancel_event(attempts: int) -> JSON:
    """The status event of a queued job canceled with its batch."""
    return {
        "status": JobStatus.CANCELED.value,
        "previous": JobStatus.QUEUED.value,
        "event": Event.CANCEL.value,
        "attempts": attempts,
    }


def completed_event(batch: Batch, status: BatchStatus, counts: Mapping[JobStatus, int]) -> JSON:
    return {
        "batch_id": batch.id,
        "status": status.value,
        "total": batch.total,
        "counts": {s.value: n for s, n in counts.items() if n},
    }


def not_found(batch_id: str) -> NotFound:
    return NotFound(f"batch {batch_id} not found", details={"batch_id": batch_id})


__all__ = [
    "COMPLETED_EVENT",
    "CREATED_EVENT",
    "ITEM_TICK_S",
    "cancel_event",
    "completed_event",
    "created",
    "ending",
    "first_tag",
    "not_found",
]
