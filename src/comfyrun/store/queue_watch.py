"""Who hears of the queue's moves: the work wake-ups a store counts (`WorkCounts`, its
`work_token`) and the watchers of `JobStore.watch_queue` (a job joined, started or ended the
queue), told after each commit."""

from __future__ import annotations

import builtins
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from comfyrun.core.job import JobStatus

log = logging.getLogger(__name__)


class WorkCounts:
    """A store's count of work wake-ups, in all and by job type: `token` is the JobStore's
    `work_token` (each part only grows, so a sum moves exactly when one of its parts does)."""

    def __init__(self) -> None:
        self.any = 0
        self.untyped = 0  # work whose type was not told (another process's commit, ...)
        self.by_type: dict[str, int] = {}

    def add(self, job_type: str | None = None) -> None:
        self.any += 1
        if job_type:
            self.by_type[job_type] = self.by_type.get(job_type, 0) + 1
        else:
            self.untyped += 1

    def token(self, types: Sequence[str] | None = None) -> int:
        if types is None:
            return self.any
        return self.untyped + sum(self.by_type.get(t, 0) for t in types)

    def others_only(self, since: int | None, types: Sequence[str] | None) -> bool:
        """After a wake-up: whether a typed wait (`since` read for `types`) saw only work of
        other types, and so waits on instead of claiming."""
        return since is not None and types is not None and since == self.token(types)


class QueueMove(enum.Enum):
    """How a job changed the queue (the unfinished jobs: what ComfyUI's face reports as its
    size), as `JobStore.watch_queue` tells it."""

    #: Queued: submitted (or created claimed, handed off as it was enqueued), or put back.
    JOINED = "joined"
    #: Claimed by a worker (running).
    STARTED = "started"
    #: Ended (succeeded, failed, canceled), or may have: said also of a write a store cannot
    #: tell from an end.
    ENDED = "ended"


def queue_move(data: Mapping[str, Any]) -> QueueMove | None:
    """The move a "status" event with `data` tells: None for one that leaves the queue as it
    was (canceling; a finished job expiring)."""
    status = data.get("status")
    if status == JobStatus.QUEUED.value:
        return QueueMove.JOINED
    if status == JobStatus.RUNNING.value:
        return QueueMove.STARTED
    if status in (JobStatus.CANCELING.value, JobStatus.EXPIRED.value):
        return None
    return QueueMove.ENDED


QueueHeard = Callable[[str, QueueMove], None]


class QueueWatchers:
    """The callers of a store's `watch_queue`, told in order (one that fails is logged and the
    others are told all the same). Cheap when there are none: `tell` is one test."""

    def __init__(self) -> None:
        self._heard: builtins.list[QueueHeard] = []

    def __bool__(self) -> bool:
        return bool(self._heard)

    def add(self, heard: QueueHeard) -> Callable[[], None]:
        self._heard = [*self._heard, heard]

        def stop() -> None:
            self._heard = [h for h in self._heard if h is not heard]

        return stop

    def tell(self, job_id: str, move: QueueMove | None) -> None:
        if move is None:
            return
        for heard in self._heard:
            try:
                heard(job_id, move)
            except Exception:
                log.exception("a watcher of the queue failed")


__all__ = ["QueueHeard", "QueueMove", "QueueWatchers", "WorkCounts", "queue_move"]
