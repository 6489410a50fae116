"""Noticing a cancel request: the API moves a running job to `canceling` in the store; the run
holding it waits for that status event (every kind of run: ComfyUI prompts, handlers, chains)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from comfyrun.core.job import JobStatus
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.store.base import JobStore

T = TypeVar("T")


async def wait_cancel_requested(store: JobStore, job_id: str, settings: DispatchSettings) -> None:
    """Return once the job's log says `canceling` (already, or later)."""
    await asyncio.sleep(settings.cancel_watch_after_s)
    await watch_cancel_requested(store, job_id, settings)


class CancelWatch:
    """`requested`, a future resolved once the job's log says `canceling` (or its watch
    failed, which counts as a request, as a failed `wait_cancel_requested` does): what
    `wait_cancel_requested` waits for, the log watched only after `cancel_watch_after_s`, a
    timer until then. Most jobs end sooner and never make the task that reads the log (a task
    made and cancelled for every job cost ~0.5 % of its CPU). `close` when done with it."""

    def __init__(self, store: JobStore, job_id: str, settings: DispatchSettings) -> None:
        loop = asyncio.get_running_loop()
        self.requested: asyncio.Future[None] = loop.create_future()
        #: The task watching the log, once the timer started it.
        self.task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            settings.cancel_watch_after_s, self._start, store, job_id, settings
        )

    def _start(self, store: JobStore, job_id: str, settings: DispatchSettings) -> None:
        self._timer = None
        if self.requested.done():
            return
        self.task = asyncio.ensure_future(watch_cancel_requested(store, job_id, settings))
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # retrieved: a failed watch is taken as a request
        if not self.requested.done():
            self.requested.set_result(None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.task is not None:
            self.task.cancel()
        self.requested.cancel()


async def watch_cancel_requested(store: JobStore, job_id: str, settings: DispatchSettings) -> None:
    """Return once the job's log says `canceling` (already, or later), watched from now."""
    task = asyncio.current_task()
    # the log so far comes back at once (one read: the wait reads before it sleeps), or, where
    # the store can tell nothing was logged since this worker claimed the job (`held`), with
    # the first news; its last status says whether the job is canceling, every later one is news
    events = await store.wait_for_event(job_id, 0, settings.idle_wait_s, held=True)
    if task is not None and task.cancelling():
        raise asyncio.CancelledError  # (as below)
    statuses = [e.data.get("status") for e in events if e.kind == "status"]
    if statuses and statuses[-1] == JobStatus.CANCELING.value:
        return
    after = events[-1].id if events else 0
    while True:
        events = await store.wait_for_event(job_id, after, settings.idle_wait_s, held=True)
        if task is not None and task.cancelling():
            # asyncio.wait_for inside a store may swallow our cancel (Python 3.11)
            raise asyncio.CancelledError
        for event in events:
            after = max(after, event.id)
            if event.kind == "status" and event.data.get("status") == JobStatus.CANCELING.value:
                return


class CancelRequested(Exception):
    """The job's cancel was requested before the work `unless_canceled` waited for was done."""


async def unless_canceled(
    work: Awaitable[T],
    store: JobStore,
    job_id: str,
    settings: DispatchSettings,
    *,
    dropped: Callable[[T], Awaitable[None]] | None = None,
) -> T:
    """`work`'s result, unless the job's cancel is requested first (or the caller is
    cancelled): then `work` is cancelled, a result it had all the same goes to `dropped`, and
    CancelRequested is raised. For what a run does before its prompt exists (fetching inputs
    and model files, which may take an hour), where nothing else watches for a cancel."""
    task = asyncio.ensure_future(work)
    watch = CancelWatch(store, job_id, settings)
    waited: set[asyncio.Future[Any]] = {task, watch.requested}
    try:
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(task, dropped)
        raise
    finally:
        watch.close()
    if task.done():
        return task.result()
    await _stop(task, dropped)
    raise CancelRequested


async def _stop(task: asyncio.Future[T], dropped: Callable[[T], Awaitable[None]] | None) -> None:
    task.cancel()
    await asyncio.wait({task})
    if task.cancelled() or task.exception() is not None or dropped is None:
        return
    with contextlib.suppress(Exception):
        await dropped(task.result())


__all__ = [
    "CancelRequested",
    "CancelWatch",
    "unless_canceled",
    "wait_cancel_requested",
    "watch_cancel_requested",
]
