"""A run's cancel watch (dispatch.cancel): it notices a cancel request made before it looked
and one made later, reading the job's log once before it sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import CancelWatch, wait_cancel_requested
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.store.memory import MemoryStore

SETTINGS = dataclasses.replace(DispatchSettings(), cancel_watch_after_s=0.0, idle_wait_s=5.0)


class CountingStore(MemoryStore):
    """Counts the log reads made of it (a wait's own reads inside it are the wait's)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self._waiting = 0

    async def events_since(self, job_id: str, after_id: int = 0) -> Any:
        if not self._waiting:
            self.reads.append("events_since")
        return await super().events_since(job_id, after_id)

    async def wait_for_event(self, job_id: str, after_id: int, timeout: float, **kw: Any) -> Any:
        self.reads.append(f"wait after {after_id}")
        self._waiting += 1
        try:
            return await super().wait_for_event(job_id, after_id, timeout, **kw)
        finally:
            self._waiting -= 1


async def running(store: CountingStore) -> str:
    job, _ = await store.enqueue(new_job())
    claimed = await store.claim("w", 30.0)
    assert claimed is not None
    return job.id


async def test_a_cancel_requested_before_the_watch_looks_is_seen_at_once() -> None:
    store = CountingStore()
    job_id = await running(store)
    await store.transition(job_id, Event.CANCEL, expect=JobStatus.RUNNING)
    await asyncio.wait_for(wait_cancel_requested(store, job_id, SETTINGS), 1.0)
    assert store.reads == ["wait after 0"]  # the log read once, no wait


async def test_a_cancel_requested_later_ends_the_watch() -> None:
    store = CountingStore()
    job_id = await running(store)
    watch = asyncio.create_task(wait_cancel_requested(store, job_id, SETTINGS))
    await asyncio.sleep(0.05)
    assert not watch.done()
    last = (await store.events_since(job_id))[-1].id
    assert store.reads[:2] == ["wait after 0", f"wait after {last}"]
    await store.append_event(job_id, "log", {"message": "not a cancel"})
    await asyncio.sleep(0.05)
    assert not watch.done()
    await store.transition(job_id, Event.CANCEL, expect=JobStatus.RUNNING)
    await asyncio.wait_for(watch, 1.0)


async def test_a_cancel_watch_reads_nothing_before_its_time() -> None:
    """A job that ends within cancel_watch_after_s never has its log read for a cancel."""
    store = CountingStore()
    job_id = await running(store)
    watch = CancelWatch(store, job_id, dataclasses.replace(SETTINGS, cancel_watch_after_s=0.2))
    await asyncio.sleep(0.05)
    watch.close()  # the run ended first
    await asyncio.sleep(0.25)
    assert store.reads == [] and watch.task is None and watch.requested.cancelled()


async def test_a_cancel_watch_notices_a_request_once_it_watches() -> None:
    store = CountingStore()
    job_id = await running(store)
    watch = CancelWatch(store, job_id, dataclasses.replace(SETTINGS, cancel_watch_after_s=0.05))
    await asyncio.sleep(0.15)
    assert watch.task is not None and not watch.requested.done()
    assert store.reads == ["wait after 0", "wait after 2"]  # the log so far, then its news
    await store.transition(job_id, Event.CANCEL, expect=JobStatus.RUNNING)
    await asyncio.wait_for(asyncio.shield(watch.requested), 1.0)
    watch.close()


async def test_a_failing_cancel_watch_counts_as_a_request() -> None:
    """As a failed wait_cancel_requested task did: the run stops its prompt rather than go on
    unable to hear a cancel."""

    class Failing(CountingStore):
        async def wait_for_event(self, *args: Any, **kw: Any) -> Any:
            raise RuntimeError("the store is gone")

    store = Failing()
    job_id = await running(store)
    watch = CancelWatch(store, job_id, SETTINGS)
    await asyncio.wait_for(asyncio.shield(watch.requested), 1.0)
    watch.close()
