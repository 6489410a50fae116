"""SQLite: a wait for a job's end reads the job once, then again only when a write may have
ended it: not at its claim, placement, progress, outputs or log lines (each wakes the waits
for its events). Another process's write to the database still makes it look."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.store import new_job

from comfyrun.core.job import Job, JobStatus, Output, OutputType, Progress
from comfyrun.core.state import Event
from comfyrun.store.sqlite import SQLiteStore

LONG_WAIT_S = 60.0
WOKEN_WITHIN_S = 10.0


class Counted(SQLiteStore):
    """A store whose reads of one job (its waits' looks) are counted."""

    reads: list[str]

    async def _job(self, job_id: str) -> Job | None:
        self.reads.append(job_id)
        return await super()._job(job_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Counted]:
    store = Counted(str(tmp_path / "jobs.db"))
    store.reads = []
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_wait_for_the_end_reads_the_job_at_its_start_and_at_its_end(
    store: Counted,
) -> None:
    job, _ = await store.enqueue(new_job())
    logged = await store.events_since(job.id)
    events = asyncio.create_task(store.wait_for_event(job.id, logged[-1].id, LONG_WAIT_S))
    waiter = asyncio.create_task(store.wait_for_end(job.id, LONG_WAIT_S))
    await asyncio.sleep(0.05)
    assert store.reads == [job.id] and not waiter.done()
    claimed = await store.claim("w", 30)
    assert claimed is not None and claimed.id == job.id
    await store.record_placement(job.id, "w", backend="b", prompt_id="p", execution_started_at=None)
    await store.record_progress(job.id, Progress(value=0.5))
    await store.append_event(job.id, "log", {"line": "not the end"})
    output = Output(node_id="9", name="x.png", type=OutputType.IMAGE, content_type="image/png")
    await store.add_output(job.id, output)
    await asyncio.sleep(0.05)
    # a wait for any of its events was woken by them; the wait for its end was not
    assert events.done() and not waiter.done()
    assert store.reads == [job.id]
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    assert store.reads == [job.id, job.id]


async def test_a_cancel_request_is_not_the_end_but_the_cancel_is(store: Counted) -> None:
    job, _ = await store.enqueue(new_job())
    assert await store.claim("w", 30) is not None
    waiter = asyncio.create_task(store.wait_for_end(job.id, LONG_WAIT_S))
    await asyncio.sleep(0.05)
    await store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.transition(job.id, Event.CANCELED, expect=JobStatus.CANCELING)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.CANCELED


async def test_another_process_ending_the_job_is_seen(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    here, there = SQLiteStore(path, cross_process_wait_s=0.05), SQLiteStore(path)
    await here.open()
    await there.open()
    try:
        job, _ = await here.enqueue(new_job())
        waiter = asyncio.create_task(here.wait_for_end(job.id, LONG_WAIT_S))
        await asyncio.sleep(0.05)
        assert await there.claim("w", 30) is not None
        await there.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
        assert ended is not None and ended.status is JobStatus.SUCCEEDED
    finally:
        await here.close()
        await there.close()


async def test_a_job_queued_here_is_not_read_before_its_wait_sleeps(store: Counted) -> None:
    await store.wait_for_work(0.01)  # the store has read a data version
    job, _ = await store.enqueue(new_job())
    waiter = asyncio.create_task(store.wait_for_end(job.id, LONG_WAIT_S))
    await asyncio.sleep(0.05)
    assert store.reads == [] and not waiter.done()
    assert await store.claim("w", 30) is not None
    await asyncio.sleep(0.05)
    assert store.reads == [] and not waiter.done()
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    assert store.reads == [job.id]
    # ended here: a later wait looks at once
    assert await store.wait_for_end(job.id, LONG_WAIT_S) == ended


async def test_a_job_queued_here_and_ended_by_another_process_is_seen_ended(
    tmp_path: Path,
) -> None:
    """Its end changes the data version read before it was queued, even when this process
    has read a newer one since (another wait's)."""
    path = str(tmp_path / "shared.db")
    here, there = SQLiteStore(path, cross_process_wait_s=0.05), SQLiteStore(path)
    await here.open()
    await there.open()
    try:
        await here.wait_for_work(0.01)
        job, _ = await here.enqueue(new_job())
        assert await there.claim("elsewhere", 30) is not None
        await there.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        await here.wait_for_work(0.01)  # a newer data version, read after the end
        ended = await asyncio.wait_for(here.wait_for_end(job.id, LONG_WAIT_S), WOKEN_WITHIN_S)
        assert ended is not None and ended.status is JobStatus.SUCCEEDED
    finally:
        await there.close()
        await here.close()


async def test_an_owners_wait_looks_at_once_at_a_job_queued_here(store: Counted) -> None:
    await store.wait_for_work(0.01)
    job, _ = await store.enqueue(new_job(owner="key-a"))
    found = await asyncio.wait_for(
        store.wait_for_end(job.id, LONG_WAIT_S, owner="key-b"), WOKEN_WITHIN_S
    )
    assert found is None and store.reads == [job.id]
