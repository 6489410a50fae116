"""PostgreSQL: a wait for the end of a job this store queued, listening throughout, does not
look at the job before a NOTIFY says it may have ended (one read a `?wait`, not three); any
doubt (queued elsewhere, the listener lost, ended before the wait) still means a look."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from tests.support.store import kill_listeners, new_job, pg_api_and_worker

from comfyrun.core.job import Job, JobStatus, NewJob
from comfyrun.core.state import Event
from comfyrun.store.base import JobStamp
from comfyrun.store.pgstatements import ENDING, OneStatementWrites
from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LONG_WAIT_S = 60.0
WOKEN_WITHIN_S = 10.0


class Nodes:
    """An API node's store (its reads of jobs counted) and a worker's, on one schema."""

    def __init__(self, api: PostgresStore, worker: PostgresStore) -> None:
        self.api, self.worker = api, worker
        self.reads: list[str] = []
        real_get = api.get

        async def get(job_id: str) -> Job | None:
            self.reads.append(job_id)
            return await real_get(job_id)

        api.get = get  # type: ignore[method-assign]

    async def finish(self, job: Job, event: Event = Event.SUCCEED) -> None:
        claimed = await self.worker.claim("w", 30)
        assert claimed is not None and claimed.id == job.id
        await self.worker.transition(job.id, event, expect=JobStatus.RUNNING)


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    async with pg_api_and_worker() as (api, worker):
        yield Nodes(api, worker)


async def test_a_job_queued_here_is_read_once_at_its_end(nodes: Nodes) -> None:
    job, _ = await nodes.api.enqueue(new_job())
    waiter = asyncio.create_task(nodes.api.wait_for_end(job.id, LONG_WAIT_S))
    await asyncio.sleep(0.1)
    assert not waiter.done() and nodes.reads == []  # not looked at: nothing said it ended
    await nodes.worker.append_event(job.id, "log", {"line": "not the end"})
    await nodes.finish(job)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    assert nodes.reads == [job.id]


async def test_a_job_queued_here_that_ended_before_the_wait_is_found(nodes: Nodes) -> None:
    """Its end was heard (or is on its way) before the wait began: either way it is read."""
    for _ in range(5):
        job, _ = await nodes.api.enqueue(new_job())
        await nodes.finish(job, Event.FAIL)
        waited = nodes.api.wait_for_end(job.id, LONG_WAIT_S)
        ended = await asyncio.wait_for(waited, WOKEN_WITHIN_S)
        assert ended is not None and ended.status is JobStatus.FAILED


async def test_an_ending_heard_while_the_enqueue_returns_is_not_lost(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends (its NOTIFY relayed) after its enqueue committed, before the enqueue has
    returned to its caller: the note made before the statement is gone, so the wait looks."""
    real = OneStatementWrites.enqueue

    async def enqueue(
        self: OneStatementWrites,
        new: NewJob,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        job, created = await real(self, new, now=now, replacing=replacing)
        assert isinstance(self, PostgresStore)
        self._heard(job.id, ENDING)  # as the listener relays an end meanwhile
        return job, created

    monkeypatch.setattr(OneStatementWrites, "enqueue", enqueue)
    job, _ = await nodes.api.enqueue(new_job())
    waited = await asyncio.wait_for(nodes.api.wait_for_end(job.id, 0.5), WOKEN_WITHIN_S)
    assert waited is not None and waited.status is JobStatus.QUEUED
    # looked at when the wait began (and again at its timeout), not only at its timeout
    assert nodes.reads == [job.id, job.id]


async def test_a_job_queued_elsewhere_is_looked_at_first(nodes: Nodes) -> None:
    job, _ = await nodes.worker.enqueue(new_job())
    await nodes.finish(job)
    ended = await asyncio.wait_for(nodes.api.wait_for_end(job.id, LONG_WAIT_S), WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    assert nodes.reads == [job.id]


async def test_a_job_of_another_owner_queued_here_is_none_at_once(nodes: Nodes) -> None:
    job, _ = await nodes.api.enqueue(new_job(owner="alice"))
    theirs = nodes.api.wait_for_end(job.id, LONG_WAIT_S, owner="bob")
    assert await asyncio.wait_for(theirs, WOKEN_WITHIN_S) is None
    mine = nodes.api.wait_for_end(job.id, 0.2, owner="alice")
    waited = await asyncio.wait_for(mine, WOKEN_WITHIN_S)
    assert waited is not None and waited.owner == "alice"


async def test_after_the_listener_is_lost_a_wait_looks(nodes: Nodes) -> None:
    """An end sent while the API node's listener was away is not heard: the jobs it queued
    before are looked at again, by the waits woken when it comes back and by those after."""
    during, _ = await nodes.api.enqueue(new_job())
    after, _ = await nodes.api.enqueue(new_job(priority=-1))
    waiter = asyncio.create_task(nodes.api.wait_for_end(during.id, LONG_WAIT_S))
    await asyncio.sleep(0.1)
    assert kill_listeners(nodes.api.channel) == 2
    await nodes.finish(during)  # maybe while the API node's listener is away
    await nodes.finish(after)
    ended = await asyncio.wait_for(waiter, WOKEN_WITHIN_S * 2)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    await asyncio.wait_for(nodes.api._listening.wait(), WOKEN_WITHIN_S)
    waited = nodes.api.wait_for_end(after.id, LONG_WAIT_S)
    ended = await asyncio.wait_for(waited, WOKEN_WITHIN_S)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize("wait", ["wait_for_event", "wait_for_end"])
async def test_a_wait_cancelled_while_it_reads_lets_the_read_finish(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch, wait: str
) -> None:
    """A run's cancel watch is cancelled when the run ends, often as it reads: the statement
    is let finish (its answer dropped), not cancelled on the server (a connection of its own
    to cancel it, and the pooled one reset)."""
    cancels: list[object] = []
    real_cancel = psycopg.AsyncConnection.cancel_safe

    async def cancel_safe(self: psycopg.AsyncConnection[Any], *args: Any, **kw: Any) -> None:
        cancels.append(self)
        await real_cancel(self, *args, **kw)

    monkeypatch.setattr(psycopg.AsyncConnection, "cancel_safe", cancel_safe)
    api = nodes.api
    job, _ = await nodes.worker.enqueue(new_job())  # queued elsewhere: the wait reads first
    finished: list[str] = []
    read_over = asyncio.Event()

    async def slow(read: Any, *args: Any) -> Any:
        async with api._read() as conn:
            await conn.execute("SELECT pg_sleep(0.3)")
        finished.append(read.__name__)
        read_over.set()
        return await read(*args)

    real_since, real_get = api.events_since, api.get
    monkeypatch.setattr(api, "events_since", lambda *a: slow(real_since, *a))
    monkeypatch.setattr(api, "get", lambda *a: slow(real_get, *a))
    waiter: asyncio.Future[Any] = asyncio.ensure_future(
        api.wait_for_event(job.id, 0, LONG_WAIT_S)
        if wait == "wait_for_event"
        else api.wait_for_end(job.id, LONG_WAIT_S)
    )
    await asyncio.sleep(0.1)  # the read is under way
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(read_over.wait(), WOKEN_WITHIN_S)
    assert cancels == [] and finished in (["events_since"], ["get"])
    assert job.id not in api._job_waiters
    again = await asyncio.wait_for(api.wait_for_end(job.id, 0.1), WOKEN_WITHIN_S)
    assert again is not None  # the store goes on as before
