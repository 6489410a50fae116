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
    events = await store.events_since(job_id)
    after = events[-1].id if events else 0
    statuses = [e.data.get("status") for e in events if e.kind == "status"]
    if statuses and statuses[-1] == JobStatus.CANCELING.value:
        return
    task = asyncio.current_task()
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
