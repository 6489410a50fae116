"""What every store writes for batches, in one place: the queued jobs of a new batch, and the
data of the events a batch logs (under the batch's id in the event log)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from comfyrun.core.batch import COMPLETED_EVENT, Batch, BatchStatus, NewBatch, ending
from comfyrun.core.job import JSON, Job, JobStatus, NewJob
from comfyrun.core.state import Event
from comfyrun.errors import NotFound
from comfyrun.store import transition

CREATED_EVENT = "batch.created"

#: created_at steps between a batch's jobs, so item order is claim and listing order
ITEM_TICK_S = 1e-6


def created(batch: NewBatch, jobs: Sequence[NewJob], now: float) -> tuple[Batch, list[Job]]:
    """The batch record and its queued jobs (tags still unset)."""
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
        transition.enqueued(dataclasses.replace(new, batch_id=batch.id), now + i * ITEM_TICK_S)
        for i, new in enumerate(jobs)
    ]
    return record, queued


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
    "not_found",
]
