"""Noticing a cancel request: the API moves a running job to `canceling` in the store; the run
holding it waits for that status event (every kind of run: ComfyUI prompts, handlers, chains)."""

from __future__ import annotations

import asyncio

from comfyrun.core.job import JobStatus
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.store.base import JobStore


async def wait_cancel_requested(store: JobStore, job_id: str, settings: DispatchSettings) -> None:
    """Return once the job's log says `canceling` (already, or later)."""
    await asyncio.sleep(settings.cancel_watch_after_s)
    task = asyncio.current_task()
    # the log so far comes back at once (one read: the wait reads before it sleeps); its last
    # status says whether the job is canceling now, and every later one is news
    events = await store.wait_for_event(job_id, 0, settings.idle_wait_s)
    if task is not None and task.cancelling():
        raise asyncio.CancelledError  # (as below)
    statuses = [e.data.get("status") for e in events if e.kind == "status"]
    if statuses and statuses[-1] == JobStatus.CANCELING.value:
        return
    after = events[-1].id if events else 0
    while True:
        events = await store.wait_for_event(job_id, after, settings.idle_wait_s)
        if task is not None and task.cancelling():
            # asyncio.wait_for inside a store may swallow our cancel (Python 3.11)
            raise asyncio.CancelledError
        for event in events:
            after = max(after, event.id)
            if event.kind == "status" and event.data.get("status") == JobStatus.CANCELING.value:
                return


__all__ = ["wait_cancel_requested"]
