"""Every store: the event log, and waiters woken by the store's own notifications."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.store import new_job

from comfyrun.core.job import JobError, JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import NotFound
from comfyrun.store.base import Changes, JobStore

#: A waiter that is not woken would sit this long; the test gives up far sooner.
LONG_WAIT_S = 60.0
WOKEN_WITHIN_S = 10.0


async def test_event_ids_grow_and_events_since_filters(store: JobStore) -> None:
    a, _ = await store.enqueue(new_job())
    b, _ = await store.enqueue(new_job())
    e1 = await store.append_event(a.id, "log", {"line": "one"})
    e2 = await store.append_event(b.id, "log", {"line": "two"})
    e3 = await store.append_event(a.id, "preview", {"n": 3})
    assert e1.id < e2.id < e3.id
    assert (e1.job_id, e1.kind, e1.data) == (a.id, "log", {"line": "one"})
    assert [e.id for e in await store.events_since(a.id, e1.id)] == [e3.id]
    assert [e.data for e in await store.events_since(a.id) if e.kind != "status"] == [
        {"line": "one"},
        {"n": 3},
    ]
    assert await store.events_since(a.id, e3.id) == []
    with pytest.raises(NotFound):
        await store.append_event("nope", "log", {})


async def test_wait_for_event_returns_at_once_when_events_exist(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job())
    events = await asyncio.wait_for(store.wait_for_event(job.id, 0, LONG_WAIT_S), WOKEN_WITHIN_S)
    assert [e.data["status"] for e in events] == ["queued"]


async def test_wait_for_event_wakes_on_a_new_event(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job())
    last = (await store.events_since(job.id))[-1].id
    waiter = asyncio.create_task(store.wait_for_event(job.id, last, LONG_WAIT_S))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.append_event(job.id, "log", {"line": "hello"})
    events = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert [e.data for e in events] == [{"line": "hello"}]


async def test_wait_for_event_ignores_other_jobs_and_times_out(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job())
    other, _ = await store.enqueue(new_job())
    last = (await store.events_since(job.id))[-1].id
    waiter = asyncio.create_task(store.wait_for_event(job.id, last, 0.5))
    await store.append_event(other.id, "log", {})
    assert await asyncio.wait_for(waiter, WOKEN_WITHIN_S) == []


async def test_a_wait_for_an_ending_event_of_no_job_returns_at_once(store: JobStore) -> None:
    """A log read from its start that holds nothing: there is no such job (a ?wait then says
    404), not a job to wait for."""
    waited = store.wait_for_event("no-such-job", 0, LONG_WAIT_S, ending=True)
    assert await asyncio.wait_for(waited, WOKEN_WITHIN_S) == []


async def test_a_wait_for_an_ending_event_returns_with_the_end(store: JobStore) -> None:
    """With `ending`, a store may return the events before the end at once or wait on past
    them; either way, what it returns is the log in order, and it returns by the end."""
    job, _ = await store.enqueue(new_job())
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == job.id
    await store.append_event(job.id, "progress", {"value": 1})
    waiter = asyncio.create_task(store.wait_for_event(job.id, 0, LONG_WAIT_S, ending=True))
    await asyncio.sleep(0.05)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    events = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    log = await store.events_since(job.id)
    assert events == log[: len(events)]
    assert events[0].data["status"] == "queued"
    if not any(e.data.get("status") == "succeeded" for e in events):  # returned before the end
        assert [e.data.get("status") for e in events if e.kind == "status"][-1] == "running"


async def test_a_wait_for_the_end_of_a_final_job_returns_it_at_once(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job())
    assert (await store.claim("w1", 30)) is not None
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    ended = await asyncio.wait_for(store.wait_for_end(job.id, LONG_WAIT_S), WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED


async def test_a_wait_for_the_end_wakes_at_the_end_not_before(store: JobStore) -> None:
    """Claimed, its progress and a log line: not the end. The job it returns is the final
    one, with what the end committed."""
    job, _ = await store.enqueue(new_job())
    waiter = asyncio.create_task(store.wait_for_end(job.id, LONG_WAIT_S))
    await asyncio.sleep(0.05)
    assert (await store.claim("w1", 30)) is not None
    await store.append_event(job.id, "progress", {"value": 1})
    await store.append_event(job.id, "log", {"line": "x"})
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await store.transition(
        job.id,
        Event.FAIL,
        expect=JobStatus.RUNNING,
        changes=Changes(error=JobError("boom", "it broke")),
    )
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.FAILED
    assert ended.error is not None and ended.error.code == "boom"


async def test_a_wait_for_the_end_times_out_with_the_job_as_it_is(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job())
    assert (await store.claim("w1", 30)) is not None
    waited = await asyncio.wait_for(store.wait_for_end(job.id, 0.3), WOKEN_WITHIN_S)
    assert waited is not None and waited.status is JobStatus.RUNNING


async def test_a_wait_for_the_end_of_a_requeued_job_waits_on(store: JobStore) -> None:
    """A failed attempt put back in the queue is not the end."""
    job, _ = await store.enqueue(new_job(max_retries=1))
    waiter = asyncio.create_task(store.wait_for_end(job.id, LONG_WAIT_S))
    assert (await store.claim("w1", 30)) is not None
    await store.transition(job.id, Event.RETRY, expect=JobStatus.RUNNING)
    await asyncio.sleep(0.15)
    assert not waiter.done()
    await store.transition(job.id, Event.CANCEL, expect=JobStatus.QUEUED)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.CANCELED


async def test_a_wait_for_the_end_of_no_job_or_anothers_is_none_at_once(
    store: JobStore,
) -> None:
    assert await asyncio.wait_for(store.wait_for_end("nope", LONG_WAIT_S), WOKEN_WITHIN_S) is None
    job, _ = await store.enqueue(new_job(owner="alice"))
    theirs = store.wait_for_end(job.id, LONG_WAIT_S, owner="bob")
    assert await asyncio.wait_for(theirs, WOKEN_WITHIN_S) is None
    mine = await asyncio.wait_for(store.wait_for_end(job.id, 0.2, owner="alice"), WOKEN_WITHIN_S)
    assert mine is not None and mine.id == job.id


async def test_wait_for_work_wakes_on_enqueue(store: JobStore) -> None:
    waiter = asyncio.create_task(store.wait_for_work(LONG_WAIT_S))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.enqueue(new_job())
    await asyncio.wait_for(waiter, WOKEN_WITHIN_S)


async def test_wait_for_work_times_out(store: JobStore) -> None:
    await asyncio.wait_for(store.wait_for_work(0.2), WOKEN_WITHIN_S)
    assert (await store.counts())[JobStatus.QUEUED] == 0


async def test_a_wake_up_before_the_wait_is_not_lost(store: JobStore) -> None:
    """A worker reads the token, finds nothing, and work comes before it starts waiting: the
    wait with `since` returns at once instead of sleeping through its timeout."""
    token = store.work_token()
    if token is None:
        pytest.skip("this store does not know when work comes")
    await store.enqueue(new_job())
    async with asyncio.timeout(WOKEN_WITHIN_S):
        while store.work_token() == token:  # PostgreSQL: the NOTIFY comes back a moment later
            await store.wait_for_work(0.05)
        await store.wait_for_work(LONG_WAIT_S, since=token)
    now = store.work_token()
    waiter = asyncio.create_task(store.wait_for_work(LONG_WAIT_S, since=now))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # nothing since `now`: it waits
    await store.enqueue(new_job())
    await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
