"""Every store: the placement of a running attempt (backend, prompt, when ComfyUI started it)
and the priority `claim` would take next."""

from __future__ import annotations

from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.store.base import Changes, JobStore

T0 = 1_700_000_000.0


async def test_next_priority_is_what_claim_would_take(store: JobStore) -> None:
    assert await store.next_priority(now=T0) is None
    await store.enqueue(new_job(priority=1), now=T0)
    await store.enqueue(new_job(priority=7), now=T0 + 1)
    assert await store.next_priority(now=T0 + 2) == 7
    job = await store.claim("w", 30, now=T0 + 2)
    assert job is not None and job.priority == 7
    assert await store.next_priority(now=T0 + 2) == 1
    await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 50)
    )
    assert await store.next_priority(now=T0 + 3) == 1  # not runnable before next_run_at
    assert await store.next_priority(now=T0 + 50) == 7


async def test_placement_is_recorded_for_the_holder_only(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(), now=T0)
    assert not await store.record_placement(
        queued.id, "w1", backend="a", prompt_id="p1", execution_started_at=None
    )
    job = await store.claim("w1", 30, now=T0 + 1)
    assert job is not None
    assert await store.record_placement(
        job.id, "w1", backend="a", prompt_id="p1", execution_started_at=None
    )
    held = await store.get(job.id)
    assert held is not None and held.backend == "a" and held.prompt_id == "p1"
    assert held.execution_started_at is None and held.waiting
    assert await store.record_placement(
        job.id, "w1", backend="a", prompt_id="p1", execution_started_at=T0 + 2
    )
    started = await store.get(job.id)
    assert started is not None and started.execution_started_at == T0 + 2
    assert started.execution_start == T0 + 2 and not started.waiting
    assert await store.get_by_prompt_id("p1") == started
    assert not await store.record_placement(
        job.id, "w2", backend="b", prompt_id="p2", execution_started_at=T0 + 3
    )
    after = await store.get(job.id)
    assert after is not None and after.backend == "a" and after.execution_started_at == T0 + 2
