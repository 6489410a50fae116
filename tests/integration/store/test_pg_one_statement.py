"""PostgreSQL: a claim of the queue's head (over every type, or among one type's jobs) is one
statement in its own transaction (claim_one), and claimers racing for the same jobs each take
different ones, every claim's events logged together; so is the end of a job whose end settles
nothing more (end_plain), and any other job's goes the general way; an event appended and a
progress snapshot are one statement each too (append_one, progress_one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import psycopg
import pytest
from tests.support.store import drop_schema, new_job, new_schema_name, pg_dsn, require_pg

from comfyrun.core.job import COMFY, Job, JobError, JobStatus, Output, OutputType, Progress
from comfyrun.core.state import Event
from comfyrun.errors import NotFound
from comfyrun.store import transition
from comfyrun.store.base import Changes, ClaimNote
from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

NOTE = ClaimNote("log", {"action": "prompt_submitted", "prompt_id": "p", "attempt": 1})


@asynccontextmanager
async def stores(n: int) -> AsyncIterator[list[PostgresStore]]:
    """`n` stores on one new schema, as `n` processes would have."""
    require_pg()
    schema = new_schema_name()
    opened = [PostgresStore(pg_dsn(), schema=schema) for _ in range(n)]
    try:
        for store in opened:
            await store.open()
        yield opened
    finally:
        for store in opened:
            await store.close()
        drop_schema(schema)


def no_transaction(store: PostgresStore) -> None:
    """Make any write transaction of `store` fail."""

    def refused() -> NoReturn:
        raise AssertionError("a write transaction was opened")

    store._write = refused  # type: ignore[method-assign]


@pytest.mark.parametrize("types", [None, (COMFY,), ("upscale",)])
async def test_a_claim_of_the_head_opens_no_transaction(types: tuple[str, ...] | None) -> None:
    async with stores(1) as (store,):
        job_type = types[0] if types else COMFY
        job, _ = await store.enqueue(new_job(type=job_type))
        no_transaction(store)
        claimed = await store.claim("w1", 30.0, note=NOTE, types=types)
        assert claimed is not None and claimed.id == job.id and claimed.type == job_type
        assert await store.get(job.id) == claimed
        events = await store.events_since(job.id)
        assert [(e.kind, e.data) for e in events[1:]] == [
            ("status", transition.claim_event(claimed)),
            ("log", NOTE.data),
        ]
        assert await store.claim("w1", 30.0, note=NOTE, types=types) is None


async def test_a_claim_over_several_types_goes_the_general_way() -> None:
    async with stores(1) as (store,):
        await store.enqueue(new_job())
        no_transaction(store)
        with pytest.raises(AssertionError, match="write transaction"):
            await store.claim("w1", 30.0, types=(COMFY, "upscale"))


async def test_racing_claimers_take_each_job_once_with_its_events_together() -> None:
    async with stores(3) as nodes:
        queued = [(await nodes[0].enqueue(new_job(priority=i % 3)))[0] for i in range(60)]
        taken: list[tuple[str, Job]] = []

        async def claimer(store: PostgresStore, name: str) -> None:
            while (job := await store.claim(name, 30.0, note=NOTE, types=(COMFY,))) is not None:
                taken.append((name, job))

        await asyncio.gather(*(claimer(nodes[i % 3], f"w{i}") for i in range(6)))
        assert sorted(job.id for _, job in taken) == sorted(job.id for job in queued)
        for name, job in taken:
            assert job.worker_id == name and job.attempts == 1
            events: list[Any] = await nodes[1].events_since(job.id)
            assert [(e.kind, e.data) for e in events[1:]] == [
                ("status", transition.claim_event(job)),
                ("log", NOTE.data),
            ]


IMAGE = Output(
    node_id="9",
    name="a.png",
    type=OutputType.IMAGE,
    content_type="image/png",
    size_bytes=3,
    storage_key="k/a.png",
)


async def test_a_plain_jobs_end_opens_no_transaction() -> None:
    async with stores(2) as (store, other):
        job, _ = await store.enqueue(new_job())
        claimed = await store.claim("w1", 30.0, types=(COMFY,))
        assert claimed is not None
        before = await store.events_since(job.id)
        no_transaction(store)
        outputs = (IMAGE, IMAGE)
        done = await store.transition(
            job.id,
            Event.SUCCEED,
            expect=JobStatus.RUNNING,
            changes=Changes(outputs=outputs),
            worker_id="w1",
        )
        assert done.status is JobStatus.SUCCEEDED and done.outputs == outputs
        assert await other.get(job.id) == done
        events = await other.events_since(job.id, before[-1].id)
        assert [e.kind for e in events] == ["output", "output", "status"]
        assert events[-1].data == {
            "status": "succeeded",
            "previous": "running",
            "event": "succeed",
            "attempts": 1,
        }
        # a failure carries its error; not as expected any more: the general way says so
        job2, _ = await store.enqueue(new_job())
        await store.claim("w1", 30.0)
        failed = await store.transition(
            job2.id,
            Event.FAIL,
            expect=JobStatus.RUNNING,
            changes=Changes(error=JobError(code="boom", message="it broke")),
        )
        last = (await other.events_since(job2.id))[-1]
        assert failed.status is JobStatus.FAILED and last.data["error"]["code"] == "boom"
        assert last.data["attempts"] == 1
        with pytest.raises(AssertionError, match="write transaction"):
            await store.transition(job2.id, Event.FAIL, expect=JobStatus.RUNNING)


async def test_an_owned_jobs_end_settles_its_key_in_the_same_statement() -> None:
    """A key's job ends in one statement too: the key's time on a backend and its unfinished
    count move with it (a failure after a retry's start counts from that start)."""
    from tests.contract.store.test_tenancy import a_key

    async with stores(2) as (store, other):
        key = await a_key(store)
        job, _ = await store.enqueue(new_job(owner=key.id), now=100.0)
        assert (await store.claim("w1", 30.0, now=101.0)) is not None
        no_transaction(store)
        done = await store.transition(
            job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=108.5, worker_id="w1"
        )
        assert done.status is JobStatus.SUCCEEDED and done.owner == key.id
        used = await other.get_api_key(key.id)
        assert used is not None and used.gpu_seconds == pytest.approx(7.5, abs=0.01)
        assert used.unfinished == 0
        # a cancel request (running -> canceling) changes nothing of the key's
        job2, _ = await other.enqueue(new_job(owner=key.id), now=200.0)
        assert (await store.claim("w1", 30.0, now=201.0)) is not None
        await store.transition(job2.id, Event.CANCEL, expect=JobStatus.RUNNING, now=202.0)
        mid = await other.get_api_key(key.id)
        assert mid is not None and mid.unfinished == 1
        assert mid.gpu_seconds == pytest.approx(7.5, abs=0.01)
        await store.transition(job2.id, Event.CANCELED, expect=JobStatus.CANCELING, now=204.0)
        end = await other.get_api_key(key.id)
        assert end is not None and end.unfinished == 0
        assert end.gpu_seconds == pytest.approx(10.5, abs=0.01)


@pytest.mark.parametrize(
    "fields",
    [{"options": {"webhook": {"url": "http://127.0.0.1:9/hook"}}}, {"batch_id": None}],
    ids=["webhook", "requeue"],
)
async def test_an_end_that_settles_more_goes_the_general_way(fields: dict[str, Any]) -> None:
    async with stores(1) as (store,):
        job, _ = await store.enqueue(new_job(**{k: v for k, v in fields.items() if v}))
        await store.claim("w1", 30.0)
        event = Event.SUCCEED if "options" in fields else Event.REQUEUE
        saved = store._write
        no_transaction(store)
        with pytest.raises(AssertionError, match="write transaction"):
            await store.transition(job.id, event, expect=JobStatus.RUNNING)
        store._write = saved  # type: ignore[method-assign]
        done = await store.transition(job.id, event, expect=JobStatus.RUNNING)
        assert done.status is (JobStatus.SUCCEEDED if event is Event.SUCCEED else JobStatus.QUEUED)
        if "options" in fields:
            assert [d.event for d in await store.deliveries(job.id)] == ["job.succeeded"]


async def test_a_lease_renewal_and_a_placement_open_no_transaction() -> None:
    async with stores(1) as (store,):
        job, _ = await store.enqueue(new_job())
        await store.claim("w1", 30.0)
        no_transaction(store)
        assert await store.renew(job.id, "w1", 60.0)
        assert not await store.renew(job.id, "w2", 60.0)
        placed = {"backend": "gpu-1", "prompt_id": "p-1", "execution_started_at": 5.0}
        assert await store.record_placement(job.id, "w1", **placed)
        assert not await store.record_placement(job.id, "w2", **placed)
        stored = await store.get(job.id)
        assert stored is not None and (stored.backend, stored.prompt_id) == ("gpu-1", "p-1")


async def test_an_event_and_a_progress_snapshot_open_no_transaction() -> None:
    """A run's log lines, previews and relayed messages (append_event) and its progress are one
    statement each, with their NOTIFY; a job that is gone is an error, and nothing is logged."""
    async with stores(2) as (store, other):
        job, _ = await store.enqueue(new_job())
        await store.claim("w1", 30.0)
        no_transaction(store)
        after = (await store.events_since(job.id))[-1].id
        heard = asyncio.create_task(other.wait_for_event(job.id, after, 10.0))
        await asyncio.sleep(0.1)  # (the other node waits)
        logged = await store.append_event(job.id, "log", {"message": "prompt submitted"})
        assert [(e.id, e.kind, e.data) for e in await heard] == [
            (logged.id, "log", {"message": "prompt submitted"})
        ]
        await store.record_progress(job.id, Progress(value=0.5, step=1, steps=2))
        stored = await store.get(job.id)
        assert stored is not None and stored.progress is not None
        assert stored.progress.value == 0.5
        events = await store.events_since(job.id, logged.id)
        assert [e.kind for e in events] == ["progress"] and events[0].data["step"] == 1
        for gone in (
            store.append_event("no-such-job", "log", {"message": "x"}),
            store.record_progress("no-such-job", Progress(value=0.1)),
        ):
            with pytest.raises(NotFound):
                await gone
        assert await store.events_since("no-such-job") == []


@pytest.mark.parametrize("write", ["append_event", "record_progress"])
async def test_an_event_waits_for_the_job_s_row_lock_before_it_draws_its_id(write: str) -> None:
    """Each append takes the job's row lock before its id is drawn and holds it until it
    commits, as an append in a transaction does (lock_job): one job's event ids commit in
    order, so a reader that saw an event never misses one of a lower id committed later."""
    require_pg()
    schema = new_schema_name()
    store = PostgresStore(pg_dsn(), schema=schema)
    await store.open()
    try:
        job, _ = await store.enqueue(new_job())
        async with await psycopg.AsyncConnection.connect(pg_dsn()) as other:
            # another writer's transaction: the row lock, then its event's id drawn
            await other.execute(f'SET search_path TO "{schema}"')
            await other.execute("SELECT 1 FROM jobs WHERE id = %s FOR NO KEY UPDATE", [job.id])
            cur = await other.execute(
                "INSERT INTO job_events (job_id, kind, data, created_at) "
                "VALUES (%s, 'log', '{}'::jsonb, 0) RETURNING id",
                [job.id],
            )
            row = await cur.fetchone()
            assert row is not None
            if write == "append_event":
                appending = asyncio.create_task(store.append_event(job.id, "log", {"n": 2}))
            else:
                appending = asyncio.create_task(store.record_progress(job.id, Progress(0.5)))
            await asyncio.sleep(0.3)
            assert not appending.done()  # waiting for the lock, no id drawn yet
            await other.commit()
        await appending
        events = await store.events_since(job.id, row[0])
        assert len(events) == 1 and events[0].id > row[0]
    finally:
        await store.close()
        drop_schema(schema)
