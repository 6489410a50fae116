"""Every store: a final status writes its webhook delivery in the same transaction; deliveries
are leased to one holder at a time and record every attempt."""

from __future__ import annotations

from tests.support.store import new_job

from comfyrun.core.job import Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.core.webhook import Attempt, DeliveryState
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0
HOOK = {"webhook": {"url": "https://hooks.example/x", "secret": "whsec_dGVzdA"}}


async def finished(store: JobStore, event: Event = Event.SUCCEED, **options: object) -> Job:
    job, _ = await store.enqueue(new_job(options=options or HOOK), now=T0)
    claimed = await store.claim("w1", 30, now=T0)
    assert claimed is not None
    return await store.transition(job.id, event, expect=JobStatus.RUNNING, now=T0 + 2)


async def test_a_final_status_owes_one_delivery(store: JobStore) -> None:
    job = await finished(store)
    [d] = await store.deliveries(job.id)
    assert (d.job_id, d.event, d.url, d.secret) == (
        job.id,
        "job.succeeded",
        "https://hooks.example/x",
        "whsec_dGVzdA",
    )
    assert d.state is DeliveryState.PENDING and d.next_attempt_at == T0 + 2 and not d.attempts
    failed = await finished(store, Event.FAIL)
    assert [x.event for x in await store.deliveries(failed.id)] == ["job.failed"]
    assert await store.delivery_counts() == {"pending": 2}


async def test_jobs_without_a_webhook_owe_none(store: JobStore) -> None:
    job = await finished(store, output="inline")
    assert await store.deliveries(job.id) == []
    queued, _ = await store.enqueue(new_job(options=HOOK), now=T0)
    canceled = await store.transition(queued.id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0)
    assert [d.event for d in await store.deliveries(canceled.id)] == ["job.canceled"]


async def test_a_lease_keeps_other_holders_off_until_it_runs_out(store: JobStore) -> None:
    job = await finished(store)
    [d] = await store.claim_deliveries("node-a", 30, now=T0 + 3)
    assert await store.claim_deliveries("node-b", 30, now=T0 + 4) == []
    [again] = await store.claim_deliveries("node-b", 30, now=T0 + 34)  # node-a went away
    assert again.id == d.id
    attempt = Attempt(at=T0 + 35, duration_s=0.1, status_code=200)
    assert await store.record_attempt(d.id, "node-a", attempt, next_attempt_at=None) is None
    done = await store.record_attempt(d.id, "node-b", attempt, next_attempt_at=None, payload="{}")
    assert done is not None and done.state is DeliveryState.DELIVERED
    assert done.delivered_at == T0 + 35 and done.payload == "{}"
    assert await store.claim_deliveries("node-a", 30, now=T0 + 100) == []
    assert [x.state for x in await store.deliveries(job.id)] == [DeliveryState.DELIVERED]


async def test_failed_attempts_are_retried_then_given_up(store: JobStore) -> None:
    job = await finished(store)
    [d] = await store.claim_deliveries("n", 30, now=T0 + 3)
    down = Attempt(at=T0 + 3, duration_s=0.0, error="connection refused")
    later = await store.record_attempt(d.id, "n", down, next_attempt_at=T0 + 10, payload="{}")
    assert later is not None and later.state is DeliveryState.PENDING
    assert later.next_attempt_at == T0 + 10 and later.attempts == (down,)
    assert await store.claim_deliveries("n", 30, now=T0 + 9) == []  # not due yet
    [d] = await store.claim_deliveries("n", 30, now=T0 + 10)
    refused = Attempt(at=T0 + 10, duration_s=0.2, status_code=500)
    gone = await store.record_attempt(d.id, "n", refused, next_attempt_at=None, payload="[]")
    assert gone is not None and gone.state is DeliveryState.FAILED
    assert gone.attempts == (down, refused) and gone.payload == "{}"  # the first body stays
    assert await store.delivery_counts() == {"failed": 1}
    assert await store.prune_deliveries(T0 + 1) == 0
    assert await store.prune_deliveries(T0 + 3) == 1
    assert await store.deliveries(job.id) == []
