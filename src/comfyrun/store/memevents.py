"""The memory store's job events and waiting (mixed into MemoryStore, store.memory): the event
log, each event telling the queue's watchers how its job moved, and the asyncio conditions that
wake the waiters for a job's events and for work. The SQL stores' semantics (store.sqlevents)."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from comfyrun.core.job import JSON, Job
from comfyrun.store.base import (
    JobEvent,
    JobStore,
    QueueHeard,
    QueueWatchers,
    end_by_events,
    nothing_to_stop,
    queue_move,
)


class MemoryEvents(ABC):
    """Events of the jobs MemoryStore keeps, and the wake-ups of its waiters."""

    def __init__(self) -> None:
        self._events: dict[str, list[JobEvent]] = {}
        self._event_ids = itertools.count(1)
        self._event_added = asyncio.Condition()
        self._work_added = asyncio.Condition()
        self._work_seq = 0
        self._queue_watchers = QueueWatchers()

    @abstractmethod
    def _get_or_raise(self, job_id: str) -> Job: ...

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        self._get_or_raise(job_id)
        event = self._append(job_id, kind, data, time.time())
        await self._wake_watchers()
        return event

    async def events_since(self, job_id: str, after_id: int = 0) -> builtins.list[JobEvent]:
        return [e for e in self._events.get(job_id, ()) if e.id > after_id]

    async def wait_for_event(
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._event_added:
            while True:
                events = await self.events_since(job_id, after_id)
                remaining = deadline - asyncio.get_running_loop().time()
                if events or remaining <= 0 or (ending and after_id == 0):
                    return events
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that comes as
                # the condition is notified (frequent here: every event notifies it), leaving
                # the caller waiting out its whole timeout
                try:
                    async with asyncio.timeout(remaining):
                        await self._event_added.wait()
                except TimeoutError:
                    return await self.events_since(job_id, after_id)

    async def wait_for_end(
        self: JobStore, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        return await end_by_events(self, job_id, timeout, owner)

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        return self._work_seq  # any work counts, whatever `types`

    def watch_new_work(self, heard: Callable[[str, str | None], None]) -> Callable[[], None]:
        return nothing_to_stop  # one process holds it (PostgresStore hears the others)

    def watch_queue(self, heard: QueueHeard) -> Callable[[], None]:
        return self._queue_watchers.add(heard)

    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        async with self._work_added:
            if since is not None and since != self._work_seq:
                return  # woken before this wait began
            try:
                async with asyncio.timeout(timeout):
                    await self._work_added.wait()
            except TimeoutError:
                return

    def _append(self, job_id: str, kind: str, data: JSON, now: float) -> JobEvent:
        event = JobEvent(
            id=next(self._event_ids), job_id=job_id, kind=kind, data=data, created_at=now
        )
        self._events.setdefault(job_id, []).append(event)
        if kind == "status" and self._queue_watchers:  # (the job's change is made by now)
            self._queue_watchers.tell(job_id, queue_move(data))
        return event

    async def _wake_watchers(self) -> None:
        async with self._event_added:
            self._event_added.notify_all()

    async def _wake_workers(self) -> None:
        self._work_seq += 1
        async with self._work_added:
            self._work_added.notify_all()


__all__ = ["MemoryEvents"]
