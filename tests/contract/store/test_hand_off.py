"""Every store: `enqueue_claimed` claims a new job for the worker handing it over, in the
enqueue's own transaction, only when no other job is queued; otherwise it is `enqueue`."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.support.store import new_job

from comfyrun.core.job import Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.store.base import Changes, ClaimNote, HandOff, JobStore

T0 = 1_700_000_000.0


NOTE = ClaimNote("prompt", {"prompt_id": "p-1", "backend": "gpu0"})
HAND = HandOff("w1", 30.0, note=NOTE)


async def test_a_job_submitted_to_an_empty_queue_is_claimed_in_its_enqueue(
    store: JobStore,
) -> None:
    token = store.work_token()
    job, created = await store.enqueue_claimed(new_job(), HAND, now=T0)
    assert created
    assert job.status is JobStatus.RUNNING and job.attempts == 1
    assert (job.worker_id, job.lease_expires_at, job.started_at) == ("w1", T0 + 30, T0)
    assert await store.get(job.id) == job
    events = await store.events_since(job.id)
    assert [(e.kind, e.data.get("status")) for e in events] == [
        ("status", "queued"),
        ("status", "running"),
        ("prompt", None),
    ]
    assert events[-1].data == {"prompt_id": "p-1", "backend": "gpu0"}
    assert store.work_token() == token  # nothing claimable came: no worker wakes for it
    assert await store.claim("w2", 30, now=T0) is None
    # it runs and ends as any claimed job does
    done = await store.transition(
        job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id="w1", changes=Changes()
    )
    assert done.status is JobStatus.SUCCEEDED


async def test_the_claimed_job_it_returns_is_the_one_stored_field_for_field(
    store: JobStore,
) -> None:
    """The job is written as its claim takes it: what the enqueue returns (every field) is
    what the store holds, as if it had been enqueued and then claimed."""
    rich = new_job(
        priority=3,
        inputs=({"name": "a.png", "url": "https://example.com/a.png"},),
        options={"output": {"return_base64": True}, "requirements": {"gpu": "a100"}},
        metadata={"client": "x", "n": [1, 2.5, None]},
        max_retries=2,
        retry_delay_s=1.5,
        timeout_s=60.0,
        idempotency_key="k-1",
        request_hash="h" * 64,
        head_start_s=4.0,
    )
    job, created = await store.enqueue_claimed(rich, HAND, now=T0)
    assert created and job.status is JobStatus.RUNNING
    assert await store.get(job.id) == job
    # and it is the job an enqueue and then a claim would have made of the same request
    twin = dataclasses.replace(rich, id="twin", idempotency_key="k-2")
    await store.enqueue(twin, now=T0)
    claimed = await store.claim("w1", 30.0, now=T0, note=NOTE)
    assert claimed is not None and claimed.id == "twin"
    assert dataclasses.replace(claimed, id=job.id, idempotency_key="k-1") == job
    twin_events = [(e.kind, e.data) for e in await store.events_since("twin")]
    events = [(e.kind, e.data) for e in await store.events_since(job.id)]
    assert events == twin_events


async def test_behind_another_queued_job_it_waits_its_turn(store: JobStore) -> None:
    first, _ = await store.enqueue(new_job(priority=0), now=T0)
    job, created = await store.enqueue_claimed(new_job(priority=9), HAND, now=T0 + 1)
    assert created and job.status is JobStatus.QUEUED and job.worker_id is None
    assert [e.data.get("status") for e in await store.events_since(job.id)] == ["queued"]
    claimed = await store.claim("w2", 30, now=T0 + 2)
    assert claimed is not None and claimed.id == job.id  # the queue's order decides
    assert (await store.get(first.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_a_job_waiting_for_its_retry_time_counts_as_queued(store: JobStore) -> None:
    await store.enqueue(new_job(), now=T0)
    retried = await store.claim("w", 30, now=T0)
    assert retried is not None
    await store.transition(
        retried.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 60)
    )
    job, _ = await store.enqueue_claimed(new_job(), HAND, now=T0 + 1)
    assert job.status is JobStatus.QUEUED


async def test_an_idempotent_replay_returns_the_first_job_unclaimed(store: JobStore) -> None:
    first, created = await store.enqueue(new_job(idempotency_key="k", request_hash="h"), now=T0)
    assert created
    again, created = await store.enqueue_claimed(
        new_job(idempotency_key="k", request_hash="h"), HAND, now=T0 + 1
    )
    assert not created and again.id == first.id and again.status is JobStatus.QUEUED
    assert (await store.get(first.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_a_decision_said_early_is_the_one_the_enqueue_returns(store: JobStore) -> None:
    """`HandOff.decided`: a store that says it does so once, before `enqueue_claimed`
    returns, with the job and `created` it then returns (claimed or, behind a queued job,
    queued). SQLite says it (before its commit); the others need not."""
    said: list[tuple[Job, bool]] = []
    hand = dataclasses.replace(HAND, decided=lambda job, created: said.append((job, created)))
    early = type(store).__name__ == "SQLiteStore"
    seen: list[list[tuple[Job, bool]]] = []

    async def enqueue(**fields: Any) -> tuple[Job, bool]:
        result = await store.enqueue_claimed(new_job(**fields), hand, now=T0)
        seen.append(list(said))
        said.clear()
        return result

    claimed = await enqueue()
    await store.enqueue(new_job(), now=T0)  # one waits: the next ones are queued behind it
    queued = await enqueue()
    replayed = await enqueue(idempotency_key="k", request_hash="h")
    replay = await enqueue(idempotency_key="k", request_hash="h")
    assert claimed[0].status is JobStatus.RUNNING and queued[0].status is JobStatus.QUEUED
    assert replay[0].id == replayed[0].id and not replay[1]
    if early:
        assert seen == [[claimed], [queued], [replayed], [replay]]
    else:
        assert all(
            s in ([], [r]) for s, r in zip(seen, [claimed, queued, replayed, replay], strict=True)
        )
