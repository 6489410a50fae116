"""Every store: `queue`, the unfinished jobs in the order they run, as a listing of the queue
(ComfyUI's GET /queue) shows them."""

from __future__ import annotations

from tests.support.store import new_job

from comfyrun.core.job import JobStatus, Output, OutputType
from comfyrun.core.state import Event
from comfyrun.store.base import JobStore, QueueEntry

T0 = 1_700_000_000.0


def ids(entries: list[QueueEntry]) -> list[str]:
    return [e.id for e in entries]


async def test_running_jobs_first_then_the_queue_from_its_head(store: JobStore) -> None:
    """Claimed jobs by claim time (a started one, one held in a backend's queue, one being
    canceled), then the queued ones in claim order: priority, then the estimated-longer job
    first at equal priority; finished jobs are not listed."""
    workflow = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    first, _ = await store.enqueue(new_job(priority=5, workflow=workflow), now=T0)
    second, _ = await store.enqueue(new_job(priority=4), now=T0 + 1)
    third, _ = await store.enqueue(new_job(priority=3), now=T0 + 2)
    done, _ = await store.enqueue(new_job(priority=2), now=T0 + 3)
    for at, job in enumerate((first, second, third, done)):
        claimed = await store.claim("w", 30, now=T0 + 10 + at)
        assert claimed is not None and claimed.id == job.id
    started = T0 + 20
    assert await store.record_placement(
        first.id, "w", backend="b", prompt_id=first.id, execution_started_at=started
    )
    await store.add_output(
        first.id, Output(node_id="9", name="x.png", type=OutputType.IMAGE, content_type="image/png")
    )
    await store.transition(third.id, Event.CANCEL, expect=JobStatus.RUNNING)
    await store.transition(done.id, Event.SUCCEED, expect=JobStatus.RUNNING)

    plain, _ = await store.enqueue(new_job(), now=T0 + 30)
    longer, _ = await store.enqueue(new_job(head_start_s=60.0), now=T0 + 31)
    urgent, _ = await store.enqueue(new_job(priority=1, metadata={"m": 1}), now=T0 + 32)
    gone, _ = await store.enqueue(new_job(), now=T0 + 33)
    await store.transition(gone.id, Event.CANCEL, expect=JobStatus.QUEUED)

    listed = await store.queue()
    assert ids(listed) == [first.id, second.id, third.id, urgent.id, longer.id, plain.id]
    by_id = {e.id: e for e in listed}
    assert [e.status for e in listed[:4]] == [
        JobStatus.RUNNING,
        JobStatus.RUNNING,
        JobStatus.CANCELING,
        JobStatus.QUEUED,
    ]
    # a claimed job whose prompt has not started waits; a started one, or one being
    # canceled, does not
    assert [e.waiting for e in listed] == [False, True, False, False, False, False]
    assert by_id[first.id].workflow == workflow
    assert by_id[first.id].output_nodes == ("9",)
    assert by_id[urgent.id].metadata == {"m": 1} and by_id[urgent.id].output_nodes == ()
    assert by_id[plain.id].options == {}
    assert by_id[plain.id].created_at == T0 + 30 and by_id[first.id].created_at == T0


async def test_limit_applies_to_each_part_and_owner_filters(store: JobStore) -> None:
    jobs = []
    for i, owner in enumerate(("ann", "bob", "ann", "bob", "ann", "ann")):
        job, _ = await store.enqueue(new_job(owner=owner), now=T0 + i)
        jobs.append(job)
    for at in range(2):
        claimed = await store.claim("w", 30, now=T0 + 10 + at)
        assert claimed is not None and claimed.id == jobs[at].id
    assert ids(await store.queue(limit=1)) == [jobs[0].id, jobs[2].id]
    assert ids(await store.queue(limit=2)) == [j.id for j in jobs[:4]]
    ann = [jobs[0].id, jobs[2].id, jobs[4].id]  # one running, two of three queued
    assert ids(await store.queue(owner="ann", limit=2)) == ann
    assert ids(await store.queue(owner="bob")) == [jobs[1].id, jobs[3].id]
    assert await store.queue(owner="nobody") == []
    assert await store.queue(limit=0) == []


async def test_an_empty_queue_lists_nothing(store: JobStore) -> None:
    assert await store.queue() == []
    job, _ = await store.enqueue(new_job(), now=T0)
    await store.transition(job.id, Event.CANCEL, expect=JobStatus.QUEUED)
    assert await store.queue() == []


async def test_a_bare_listing_leaves_the_queued_jobs_bodies_to_queue_bodies(
    store: JobStore,
) -> None:
    """`queue(bodies=False)`: the same entries, the queued ones without their workflow,
    options and metadata (asking for them is an error, not an empty workflow); the running
    ones whole. `queue_bodies` reads them for the ids asked (an owner's only, when given)."""
    import dataclasses

    import pytest

    workflow = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    running, _ = await store.enqueue(new_job(workflow=workflow), now=T0)
    assert await store.claim("w", 30, now=T0 + 1) is not None
    mine, _ = await store.enqueue(
        new_job(owner="ann", workflow=workflow, metadata={"m": 1}), now=T0 + 2
    )
    theirs, _ = await store.enqueue(new_job(owner="bob"), now=T0 + 3)
    whole = await store.queue()
    bare = await store.queue(bodies=False)
    assert ids(bare) == ids(whole) == [running.id, mine.id, theirs.id]
    assert bare[0] == whole[0] and bare[0].workflow == workflow  # running: whole
    for b, w in zip(bare[1:], whole[1:], strict=True):
        assert b.raw is None and dataclasses.replace(b, raw=w.raw) == w
        with pytest.raises(ValueError):
            _ = b.workflow
    bodies = await store.queue_bodies([mine.id, theirs.id, "nope"])
    assert set(bodies) == {mine.id, theirs.id}
    filled = dataclasses.replace(bare[1], raw=bodies[mine.id])
    assert (filled.workflow, filled.metadata, filled.options) == (workflow, {"m": 1}, {})
    assert set(await store.queue_bodies([mine.id, theirs.id], owner="ann")) == {mine.id}
    assert await store.queue_bodies([]) == {}
