"""PostgreSQL: waiters keep waking after the LISTEN connection is killed (it reconnects)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.support.store import (
    drop_schema,
    kill_listeners,
    new_job,
    new_schema_name,
    pg_dsn,
    require_pg,
)

from comfyrun.core.job import JobStatus
from comfyrun.store.base import JobEvent
from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


async def test_listener_reconnects_after_its_backend_is_killed() -> None:
    require_pg()
    schema = new_schema_name()
    node_a = PostgresStore(pg_dsn(), schema=schema)
    node_b = PostgresStore(pg_dsn(), schema=schema)
    await node_a.open()
    await node_b.open()
    try:
        job, _ = await node_b.enqueue(new_job())
        assert kill_listeners(node_a.channel) == 2  # both nodes' listeners
        last = (await node_a.events_since(job.id))[-1].id
        for round_ in range(3):  # the first rounds may race the reconnect; none may be lost
            waiter = asyncio.create_task(node_a.wait_for_event(job.id, last, 60))
            await asyncio.sleep(0.2)
            event = await node_b.append_event(job.id, "log", {"round": round_})
            events = await asyncio.wait_for(waiter, 15)
            assert [e.id for e in events] == [event.id]
            last = event.id
    finally:
        await node_a.close()
        await node_b.close()
        drop_schema(schema)


async def test_a_wait_for_an_ending_reads_no_events_for_others() -> None:
    """`wait_for_event(ending=True)` (a ?wait on an API node) is woken by a status event that
    may end the job, not by its claim, logs or outputs (no look at its events for those); a
    NOTIFY without the mark (an older node's) still wakes it."""
    from comfyrun.core.state import Event

    require_pg()
    schema = new_schema_name()
    api, worker = PostgresStore(pg_dsn(), schema=schema), PostgresStore(pg_dsn(), schema=schema)
    await api.open()
    await worker.open()
    reads: list[str] = []
    real_since = api.events_since

    async def events_since(job_id: str, after_id: int = 0) -> list[JobEvent]:
        reads.append(job_id)
        return await real_since(job_id, after_id)

    api.events_since = events_since  # type: ignore[method-assign]
    waiting: asyncio.Task[list[JobEvent]] | None = None
    try:
        job, _ = await worker.enqueue(new_job(priority=1))
        other, _ = await worker.enqueue(new_job())
        last = (await real_since(job.id))[-1].id
        waiting = asyncio.create_task(api.wait_for_event(job.id, last, 60, ending=True))
        await asyncio.sleep(0)  # the waiter registers before its first look
        assert job.id in api._job_waiters
        claimed = await worker.claim("w", 30)
        assert claimed is not None and claimed.id == job.id
        await worker.append_event(job.id, "log", {"line": "hello"})
        await worker.append_event(job.id, "output", {"node": "2"})
        # NOTIFYs come in commit order: once one for the other job has woken its waiter,
        # the job's three have been dispatched
        other_last = (await real_since(other.id))[-1].id
        other_waiter = asyncio.create_task(api.wait_for_event(other.id, other_last, 10))
        await asyncio.sleep(0)  # the waiter registers before its first look
        assert other.id in api._job_waiters
        await worker.append_event(other.id, "log", {"line": "later"})
        assert len(await other_waiter) == 1
        assert not waiting.done() and reads.count(job.id) == 1  # its first look only
        await worker.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        events = await asyncio.wait_for(waiting, 10)
        assert [e.kind for e in events] == ["status", "log", "output", "status"]
        assert reads.count(job.id) == 2
        # an unmarked NOTIFY (an older node's) may end it: a waiter looks
        end = events[-1].id
        waiting = asyncio.create_task(api.wait_for_event(job.id, end, 60, ending=True))
        await asyncio.sleep(0)  # the waiter registers before its first look
        assert job.id in api._job_waiters
        await api._dispatch(f"e:{job.id}")
        for _ in range(100):
            if reads.count(job.id) == 4:
                break
            await asyncio.sleep(0.01)
        assert reads.count(job.id) == 4 and not waiting.done()
    finally:
        if waiting is not None:
            # ended before the stores close: a read it has in flight would otherwise keep its
            # connection (and the locks the schema's drop waits for) past the close
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        await api.close()
        await worker.close()
        drop_schema(schema)


async def test_another_node_hears_of_new_jobs_queued_or_handed_off() -> None:
    """`watch_new_work` on one node hears every job another creates: one queued (claimable)
    and one handed off as it was enqueued (created claimed: no worker elsewhere is woken for
    it, but an API node's socket may be its ComfyUI client's), each with its type."""
    from comfyrun.store.base import HandOff

    require_pg()
    schema = new_schema_name()
    api, serve = PostgresStore(pg_dsn(), schema=schema), PostgresStore(pg_dsn(), schema=schema)
    await api.open()
    await serve.open()
    heard: list[tuple[str, str | None]] = []
    later: list[str] = []
    stop = api.watch_new_work(lambda job_id, job_type: heard.append((job_id, job_type)))
    stop_later = api.watch_new_work(lambda job_id, job_type: later.append(job_id))
    try:
        handed, _ = await serve.enqueue_claimed(new_job(), HandOff("w1", 30.0))
        assert handed.status is JobStatus.RUNNING
        tokens = api.work_token(["comfy"])
        queued, _ = await serve.enqueue(new_job())
        for _ in range(500):
            if len(heard) == 2:
                break
            await asyncio.sleep(0.01)
        assert heard == [(handed.id, "comfy"), (queued.id, "comfy")]
        assert api.work_token(["comfy"]) != tokens  # the queued one woke claimers
        stop()
        third, _ = await serve.enqueue(new_job())
        for _ in range(500):
            if third.id in later:
                break
            await asyncio.sleep(0.01)
        assert later == [handed.id, queued.id, third.id]
        assert len(heard) == 2  # the stopped watcher was not called
        stop_later()
    finally:
        await api.close()
        await serve.close()
        drop_schema(schema)


async def test_another_node_hears_every_move_of_the_queue() -> None:
    """`watch_queue` on one node hears the jobs another queues, claims and ends (the claim by
    the start flag of its NOTIFY), and nothing of their progress: the ComfyUI sockets of every
    API node hear the queue change, whichever node changed it."""
    from comfyrun.core.job import Progress
    from comfyrun.core.state import Event
    from comfyrun.store.base import QueueMove

    require_pg()
    schema = new_schema_name()
    api, worker = PostgresStore(pg_dsn(), schema=schema), PostgresStore(pg_dsn(), schema=schema)
    await api.open()
    await worker.open()
    heard: list[tuple[str, QueueMove]] = []
    stop = api.watch_queue(lambda job_id, move: heard.append((job_id, move)))
    try:
        job, _ = await worker.enqueue(new_job())
        assert await worker.claim("w1", 30) is not None
        await worker.record_progress(job.id, Progress(value=0.5))
        await worker.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        want = [(job.id, QueueMove.JOINED), (job.id, QueueMove.STARTED), (job.id, QueueMove.ENDED)]
        for _ in range(500):
            if len(heard) >= 3:
                break
            await asyncio.sleep(0.01)
        assert heard == want
        stop()
    finally:
        await api.close()
        await worker.close()
        drop_schema(schema)
