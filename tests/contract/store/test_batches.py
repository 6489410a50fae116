"""Every store: batches (atomic creation in item order, counts, paging, one batch.completed
when the last job ends, bulk cancel) and fair claim order between batches and owners."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.store import new_job

from comfyrun.core.batch import BatchStatus, NewBatch
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import NotFound
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0


def batch() -> NewBatch:
    return NewBatch(workflow="t2i", version="v1", options={"webhook": {"url": "http://h"}})


async def test_a_batch_is_created_with_its_jobs_in_item_order(store: JobStore) -> None:
    jobs = [new_job(metadata={"i": i}) for i in range(5)]
    created = await store.create_batch(batch(), jobs, now=T0)
    assert created.total == 5 and created.status is BatchStatus.RUNNING
    assert await store.get_batch(created.id) == created
    assert [b.id for b in await store.open_batches()] == [created.id]
    counts = await store.batch_counts(created.id)
    assert counts[JobStatus.QUEUED] == 5 and counts[JobStatus.RUNNING] == 0
    first = await store.batch_jobs(created.id, limit=3)
    rest = await store.batch_jobs(created.id, limit=3, cursor=first.next_cursor)
    order = [j.metadata["i"] for j in first.jobs + rest.jobs]
    assert order == [0, 1, 2, 3, 4] and rest.next_cursor is None
    assert all(j.batch_id == created.id for j in first.jobs)
    claimed = [await store.claim("w", 30, now=T0 + 1) for _ in range(5)]
    assert [j.metadata["i"] for j in claimed if j is not None] == [0, 1, 2, 3, 4]
    assert (await store.events_since(created.id))[0].kind == "batch.created"


async def test_the_last_job_to_end_completes_the_batch_once(store: JobStore) -> None:
    created = await store.create_batch(batch(), [new_job(), new_job()], now=T0)
    for event, status in (
        (Event.SUCCEED, BatchStatus.RUNNING),
        (Event.FAIL, BatchStatus.COMPLETED),
    ):
        job = await store.claim("w", 30, now=T0 + 1)
        assert job is not None
        await store.transition(job.id, event, expect=JobStatus.RUNNING, now=T0 + 2)
        ended = await store.get_batch(created.id)
        assert ended is not None and ended.status is status
    events = [e for e in await store.events_since(created.id) if e.kind == "batch.completed"]
    assert len(events) == 1
    assert events[0].data["status"] == "completed"
    assert events[0].data["counts"] == {"succeeded": 1, "failed": 1}
    assert await store.open_batches() == []


async def test_a_batch_that_ends_owes_its_webhook_in_the_outbox(store: JobStore) -> None:
    """batch.completed is written to the outbox with the batch's end (one transaction, so a
    crash right after loses nothing); a batch that asked for no webhook owes none."""
    hooked = await store.create_batch(batch(), [new_job()], now=T0)
    quiet = await store.create_batch(NewBatch(workflow="t2i", version="v1"), [new_job()], now=T0)
    for _ in range(2):
        job = await store.claim("w", 30, now=T0 + 1)
        assert job is not None
        await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 2)
    owed = await store.deliveries(hooked.id)
    assert [(d.event, d.url, d.job_id) for d in owed] == [
        ("batch.completed", "http://h", hooked.id)
    ]
    assert await store.deliveries(quiet.id) == []
    due = await store.claim_deliveries("n", 30, now=T0 + 3)
    assert [d.job_id for d in due] == [hooked.id]


async def test_cancel_cancels_queued_jobs_and_reports_running_ones(store: JobStore) -> None:
    created = await store.create_batch(batch(), [new_job() for _ in range(4)], now=T0)
    running = await store.claim("w", 30, now=T0 + 1)
    assert running is not None
    after, active = await store.cancel_batch(created.id, now=T0 + 2)
    assert after.status is BatchStatus.CANCELING and [j.id for j in active] == [running.id]
    counts = await store.batch_counts(created.id)
    assert counts[JobStatus.CANCELED] == 3 and counts[JobStatus.RUNNING] == 1
    canceled = (await store.batch_jobs(created.id)).jobs[1]
    assert (await store.events_since(canceled.id))[-1].data["status"] == "canceled"
    await store.transition(running.id, Event.CANCEL, expect=JobStatus.RUNNING, now=T0 + 3)
    await store.transition(running.id, Event.CANCELED, expect=JobStatus.CANCELING, now=T0 + 4)
    ended = await store.get_batch(created.id)
    assert ended is not None and ended.status is BatchStatus.CANCELED
    again, active = await store.cancel_batch(created.id, now=T0 + 5)
    assert again.status is BatchStatus.CANCELED and active == []
    with pytest.raises(NotFound):
        await store.cancel_batch("nope")


async def test_a_batch_of_queued_jobs_only_ends_canceled_at_once(store: JobStore) -> None:
    created = await store.create_batch(batch(), [new_job() for _ in range(3)], now=T0)
    after, active = await store.cancel_batch(created.id, now=T0 + 1)
    assert after.status is BatchStatus.CANCELED and active == []
    kinds = [e.kind for e in await store.events_since(created.id)]
    assert kinds == ["batch.created", "batch.completed"]
    assert await store.claim("w", 30, now=T0 + 2) is None


async def test_a_new_job_runs_after_one_job_of_a_big_batch(store: JobStore) -> None:
    big = await store.create_batch(batch(), [new_job() for _ in range(50)], now=T0)
    for _ in range(10):
        assert await store.claim("w", 30, now=T0 + 1) is not None
    single, _ = await store.enqueue(new_job(), now=T0 + 2)
    assert await store.queue_position(single.id, now=T0 + 3) == 1
    first = await store.claim("w", 30, now=T0 + 3)
    second = await store.claim("w", 30, now=T0 + 3)
    assert first is not None and first.batch_id == big.id
    assert second is not None and second.id == single.id


async def test_batches_and_owners_take_turns_at_equal_priority(store: JobStore) -> None:
    a = await store.create_batch(batch(), [new_job() for _ in range(4)], now=T0)
    b = await store.create_batch(batch(), [new_job() for _ in range(4)], now=T0 + 1)
    for i in range(3):
        await store.enqueue(new_job(owner="carol"), now=T0 + 2 + i)
    urgent, _ = await store.enqueue(new_job(priority=5), now=T0 + 9)
    order = []
    for _ in range(12):
        job = await store.claim("w", 30, now=T0 + 10)
        assert job is not None
        order.append(job.id if job.id == urgent.id else job.batch_id or job.owner)
    assert order[0] == urgent.id
    assert order[1:10] == [a.id, b.id, "carol"] * 3
    assert order[10:] == [a.id, b.id]


async def test_followers_of_jobs_canceled_with_their_batch_are_woken(store: JobStore) -> None:
    created = await store.create_batch(batch(), [new_job(), new_job()], now=T0)
    job = (await store.batch_jobs(created.id)).jobs[0]
    last = (await store.events_since(job.id))[-1].id
    follower = asyncio.create_task(store.wait_for_event(job.id, last, 60))
    await store.cancel_batch(created.id)
    events = await asyncio.wait_for(follower, 30)
    assert events and events[-1].data["status"] == "canceled"


async def test_ended_batches_go_with_their_jobs_retention(store: JobStore) -> None:
    created = await store.create_batch(batch(), [new_job()], now=T0)
    await store.cancel_batch(created.id, now=T0 + 1)
    kept = await store.delete_finished_before(T0 + 1)
    assert kept == [] and await store.get_batch(created.id) is not None
    deleted = await store.delete_finished_before(T0 + 2)
    assert len(deleted) == 1 and await store.get_batch(created.id) is None
    assert await store.events_since(created.id) == []
