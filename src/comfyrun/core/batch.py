"""Batches: many jobs of one workflow template, followed as one (pure, no I/O).

Rules:
- a batch is `running` while any of its jobs is not terminal, then `completed`; a cancel
  request makes it `canceling` (queued jobs canceled at once, running ones interrupted) and,
  once every job has ended, `canceled`. Either end happens once and logs one
  `batch.completed` event;
- a `matrix` of parameter lists expands to its cartesian product, in row-major order (the
  last parameter varies fastest);
- fairness: a job belongs to a *fair group*: its batch, else its owner; a job of neither is
  a group of its own. Within one priority, jobs are claimed in order of a virtual start tag:
  a job gets max(the tag at the head of the queue, its group's last queued tag + 1). So
  groups alternate one job each: a new job of an idle group starts after at most one job of
  each busy group, however many those have queued; jobs without a group keep FIFO order among
  themselves (they all start at the head's tag).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyrun.core.ids import uuid7
from comfyrun.core.job import JSON, TERMINAL, JobStatus


class BatchStatus(enum.StrEnum):
    RUNNING = "running"
    CANCELING = "canceling"
    COMPLETED = "completed"
    CANCELED = "canceled"


BATCH_DONE: frozenset[BatchStatus] = frozenset({BatchStatus.COMPLETED, BatchStatus.CANCELED})

#: the kind of the event a batch logs when it ends
COMPLETED_EVENT = "batch.completed"


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    workflow: str
    version: str
    total: int
    status: BatchStatus = BatchStatus.RUNNING
    options: JSON = field(default_factory=dict)  # the webhook, shared job options
    metadata: JSON = field(default_factory=dict)
    owner: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status in BATCH_DONE

    def evolve(self, **changes: Any) -> Batch:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class NewBatch:
    workflow: str
    version: str
    options: JSON = field(default_factory=dict)
    metadata: JSON = field(default_factory=dict)
    owner: str | None = None
    id: str = field(default_factory=uuid7)


def ending(status: BatchStatus, open_jobs: int) -> BatchStatus | None:
    """The status a batch ends in now that `open_jobs` of its jobs are not terminal, or None
    when it does not end (yet, or because it already has)."""
    if open_jobs > 0 or status in BATCH_DONE:
        return None
    return BatchStatus.CANCELED if status is BatchStatus.CANCELING else BatchStatus.COMPLETED


def progress(total: int, counts: Mapping[JobStatus, int]) -> float:
    """The share of the batch's jobs that have ended (0..1)."""
    if total <= 0:
        return 1.0
    ended = sum(n for status, n in counts.items() if status in TERMINAL)
    return min(1.0, ended / total)


def expand_matrix(matrix: Mapping[str, Sequence[Any]]) -> list[JSON]:
    """{"seed": [1, 2], "prompt": ["a", "b"]} → the 4 params objects of the product."""
    names = list(matrix)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*matrix.values())]


#: the fair key of a job in no group
NO_GROUP = ""


def fair_key(batch_id: str | None, owner: str | None) -> str:
    """The fair group of a job: its batch, else its owner, else NO_GROUP."""
    if batch_id is not None:
        return f"batch:{batch_id}"
    return f"owner:{owner}" if owner else NO_GROUP


def fair_tag(head: float | None, group_last: float | None) -> float:
    """The virtual start tag of a group's next job (see the module's rules)."""
    start = head if head is not None else 0.0
    return start if group_last is None else max(start, group_last + 1.0)


__all__ = [
    "BATCH_DONE",
    "COMPLETED_EVENT",
    "NO_GROUP",
    "Batch",
    "BatchStatus",
    "NewBatch",
    "ending",
    "expand_matrix",
    "fair_key",
    "fair_tag",
    "progress",
]
