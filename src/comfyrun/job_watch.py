"""Following a job: waiting for its end (`?wait`) and its events as they happen (SSE, ComfyUI's
socket). The part of the job service (comfyrun.service) that reads the store's events and the
word of this process's runs (comfyrun.finished); JobService mixes it in.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from comfyrun import stages
from comfyrun.core.job import JSON, TERMINAL_NAMES, Job, JobStatus
from comfyrun.errors import NotFound
from comfyrun.finished import FinishedJobs
from comfyrun.store.base import JobEvent, JobStore

#: How often an event stream of a queued job re-reads its queue position.
QUEUE_POSITION_POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as callers see it: the record plus its place in the queue."""

    job: Job
    queue_position: int | None


class JobWatch(ABC):
    """Waiting for a job and following its events (mixed into JobService, which sets these)."""

    store: JobStore
    #: jobs seen finished lately, and the word of this process's runs
    finished: FinishedJobs
    #: no run of this process may take a job up: a wait needs only the events that may end it
    _ending_only: bool
    _key_scope: str
    _clock: Callable[[], float]

    @abstractmethod
    async def get(self, job_id: str, *, position: bool = True) -> JobView:
        """The job, with its queue position while queued (unless not `position`)."""

    @abstractmethod
    async def _position(self, job: Job) -> int | None:
        """The queue position of `job`, counted up to the cap."""

    async def wait(self, job_id: str, timeout: float) -> JobView:
        """Return when the job is terminal or after `timeout` seconds: told by a run of this
        process while one holds it, else by the store's wait for its end, which a run here
        taking the job up interrupts (a queued job's `?wait` so reads it once, or on
        PostgreSQL not at all, before its run here settles it)."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._key_scope and await self.store.get(job_id) is None:
            # another key's job is none at once, as one that does not exist is (a run of it
            # here held the wait until it ended: how long it ran told that it was there)
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        while True:
            settled = await self.finished.wait(job_id, deadline, self._key_scope)
            if settled is not None:
                stages.mark(job_id, "notified")
                return JobView(settled, None)
            if self._ending_only:  # no run here: only the store can tell of the job's end
                job = await self._wait_for_end(job_id, deadline)
                break
            if time.monotonic() >= deadline:  # the job as it is now (a run here may hold it)
                job = await self._job(job_id)
                break
            found = await self._end_or_taken(job_id, deadline)
            if found is not None:
                job = found
                break
        stages.mark(job_id, "notified")
        if job.status is JobStatus.QUEUED:
            return JobView(job, await self._position(job))
        return JobView(job, None)

    async def _end_or_taken(self, job_id: str, deadline: float) -> Job | None:
        """The job once final (or as it is at `deadline`) by the store's wait for its end;
        None when a run of this process took it up first (or a 30-s part of a longer wait
        passed): the caller waits for that run's word, or again."""
        remaining = max(0.0, deadline - time.monotonic())
        end = asyncio.ensure_future(self.store.wait_for_end(job_id, min(remaining, 30.0)))
        taken = asyncio.ensure_future(self.finished.taken(job_id, self._key_scope))
        try:
            await asyncio.wait({end, taken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (end, taken):
                waiting.cancel()
            await asyncio.wait({end, taken})
        if end.cancelled():  # a run here took the job up first
            return None
        return self._end_found(job_id, end.result(), remaining)

    async def _wait_for_end(self, job_id: str, deadline: float) -> Job:
        """The job once final, or at `deadline`, from the store's wait (NotFound when there is
        none, or none this key may see)."""
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            found = await self.store.wait_for_end(job_id, min(remaining, 30.0))
            job = self._end_found(job_id, found, remaining)
            if job is not None:
                return job

    def _end_found(self, job_id: str, found: Job | None, remaining: float) -> Job | None:
        """What a 30-s part of a wait for the job's end (`remaining` s were left) found: the
        job when final, kept at hand, or when the wait's time is up; None when only the part
        passed; NotFound when there is no such job (for this key)."""
        if found is None:
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        if found.terminal:
            self.remember(found)
            return found
        return found if remaining <= 30.0 else None

    def run_over(self, job_id: str) -> None:
        """A run of this process is over, the job settled or given back (RunContext.run_over)."""
        self.finished.run_over(job_id)

    def run_started(self, job_id: str) -> None:
        """A run of this process took the job up (RunContext.run_started)."""
        self.finished.run_started(job_id)

    async def _job(self, job_id: str) -> Job:
        job = await self.job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        return job

    async def job(self, job_id: str) -> Job | None:
        """The job, from the jobs seen finished lately when it is one of them."""
        if self.finished.holds(job_id):
            return self.finished.kept(job_id, self._key_scope)
        job = await self.store.get(job_id)
        if job is not None:
            self.remember(job)
        return job

    def shows(self, job: Job) -> bool:
        """Whether this view of the service shows `job` (a key's view: that key's jobs)."""
        return not self._key_scope or job.owner == self._key_scope

    def remember(self, job: Job) -> None:
        """Keep `job` at hand if it is finished (`job` reads it from there): a job read here,
        or told by a worker of this process whose run just committed its end
        (RunContext.finished), so that the requests that follow (a `?wait`, a GET, a ComfyUI
        client's /history) need not read it again."""
        self.finished.remember(job)

    async def events(
        self,
        job_id: str,
        *,
        after_id: int | None = None,
        idle_s: float = 15.0,
        positions: bool = True,
    ) -> AsyncGenerator[JobEvent | None, None]:
        """The job's events as they happen; `None` marks `idle_s` without any (a keep-alive).

        Without `after_id`: a snapshot first (status with queue_position, the latest progress
        and preview, each carrying the id of the newest logged event), then new events. With
        `after_id` (Last-Event-ID): every logged event after it, then new ones. Either way the
        stream ends after the terminal status. Without `positions`, a queued job's
        queue_position is neither counted nor followed (ComfyUI's socket has none).
        """
        view: JobView | None
        if after_id is None:
            history = await self.store.events_since(job_id, 0)
            last_id = history[-1].id if history else 0
            # read after the id so no transition falls between
            view = await self.get(job_id, position=positions)
            for snap in self._snapshot(view, history, last_id):
                yield snap
            if view.job.terminal:
                return
            pending: list[JobEvent] = []
        else:
            last_id = after_id
            known: JobView | None = None
            if positions:
                known = await self.get(job_id)
            pending = await self.store.events_since(job_id, after_id)
            if not pending:  # (NotFound when there is no such job)
                ended = known or await self.get(job_id, position=False)
                if ended.job.terminal:  # resumed past its end: said at once, as it ends
                    yield JobEvent(
                        last_id, job_id, "status", _status_data(ended.job, None), self._clock()
                    )
                    return
            view = known  # without positions, a job whose events came is not read at all
        position = view.queue_position if view is not None else None
        queued = positions and view is not None and view.job.status is JobStatus.QUEUED
        quiet_since = time.monotonic()
        while True:
            for ev in pending:
                last_id = ev.id
                yield ev
                if ev.kind == "status":
                    if _is_terminal(ev.data.get("status")):
                        return
                    queued = positions and ev.data.get("status") == JobStatus.QUEUED.value
            # while queued, look at the position every few seconds (other jobs move it)
            wait_s = min(idle_s, QUEUE_POSITION_POLL_S) if queued else idle_s
            pending = await self.store.wait_for_event(job_id, last_id, wait_s)
            if pending:
                quiet_since = time.monotonic()
                continue
            current = await self.store.get(job_id)
            if current is None:
                return
            if current.terminal:  # its terminal event was lost or pruned: say so and end
                yield JobEvent(
                    last_id, job_id, "status", _status_data(current, None), self._clock()
                )
                return
            queued = positions and current.status is JobStatus.QUEUED
            if queued:
                new_position = await self._position(current)
                if new_position != position:
                    position = new_position
                    quiet_since = time.monotonic()
                    data = _status_data(current, new_position)
                    yield JobEvent(last_id, job_id, "status", data, self._clock())
                    continue
            if time.monotonic() - quiet_since >= idle_s * 0.99:
                quiet_since = time.monotonic()
                yield None

    def _snapshot(self, view: JobView, history: list[JobEvent], last_id: int) -> list[JobEvent]:
        job, now = view.job, self._clock()
        out = [JobEvent(last_id, job.id, "status", _status_data(job, view.queue_position), now)]
        if job.terminal:
            return out
        progress = next((e for e in reversed(history) if e.kind == "progress"), None)
        if progress is not None:
            out.append(JobEvent(last_id, job.id, "progress", progress.data, now))
        preview = next((e for e in reversed(history) if e.kind == "preview"), None)
        if preview is not None:
            out.append(JobEvent(last_id, job.id, "preview", preview.data, now))
        return out


def _is_terminal(status: Any) -> bool:
    return isinstance(status, str) and status in TERMINAL_NAMES


def _status_data(job: Job, queue_position: int | None) -> JSON:
    return {"status": job.status.value, "queue_position": queue_position}


__all__ = ["QUEUE_POSITION_POLL_S", "TERMINAL_NAMES", "JobView", "JobWatch"]
