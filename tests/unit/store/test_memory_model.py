"""Property: any sequence of events applied through a store matches the pure state table, and
every status change leaves exactly one "status" event (illegal events change nothing)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event, allowed, next_state
from comfyrun.errors import IllegalTransition
from comfyrun.store.memory import MemoryStore

EVENTS = st.lists(st.sampled_from([e for e in Event if e is not Event.CLAIM]), max_size=12)


async def replay(events: list[Event]) -> None:
    store = MemoryStore()
    job, _ = await store.enqueue(new_job(max_retries=5), now=0.0)
    claimed = await store.claim("w", 30, now=0.0)
    assert claimed is not None
    model = JobStatus.RUNNING
    status_events = 2  # enqueue, claim
    for i, event in enumerate(events, start=1):
        before = await store.get(job.id)
        if allowed(model, event):
            after = await store.transition(job.id, event, expect=model, now=float(i))
            expected = next_state(model, event)
            assert after.status is expected
            status_events += expected is not model
            model = expected
        else:
            try:
                await store.transition(job.id, event, expect=model, now=float(i))
            except IllegalTransition:
                pass
            else:
                raise AssertionError(f"{event} allowed in {model}")
            assert await store.get(job.id) == before
        if model is JobStatus.QUEUED:  # run it again, as a worker would
            again = await store.claim("w", 30, now=1e9)
            assert again is not None
            model = JobStatus.RUNNING
            status_events += 1
        log = [e for e in await store.events_since(job.id) if e.kind == "status"]
        assert len(log) == status_events
        assert log[-1].data["status"] == model.value


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_event_sequences_follow_the_table(events: list[Event]) -> None:
    asyncio.run(replay(events))
