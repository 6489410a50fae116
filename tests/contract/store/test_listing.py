"""Every store: listing newest first, filters, cursor pagination stable under inserts."""

from __future__ import annotations

import pytest
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import InvalidRequest
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0


async def test_list_is_newest_first_and_paginates(store: JobStore) -> None:
    ids = [(await store.enqueue(new_job(), now=T0 + i))[0].id for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list(limit=3, cursor=cursor)
        seen += [j.id for j in page.jobs]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_pages_are_stable_under_inserts(store: JobStore) -> None:
    ids = [(await store.enqueue(new_job(), now=T0 + i))[0].id for i in range(6)]
    first = await store.list(limit=3)
    for i in range(3):
        await store.enqueue(new_job(), now=T0 + 100 + i)
    second = await store.list(limit=3, cursor=first.next_cursor)
    assert [j.id for j in first.jobs + second.jobs] == list(reversed(ids))


async def test_list_filters_by_status_and_owner(store: JobStore) -> None:
    a, _ = await store.enqueue(new_job(owner="ann"), now=T0)
    b, _ = await store.enqueue(new_job(owner="bob"), now=T0 + 1)
    c, _ = await store.enqueue(new_job(owner="ann"), now=T0 + 2)
    claimed = await store.claim("w", 30, now=T0 + 3)
    assert claimed is not None and claimed.id == a.id
    queued = await store.list(statuses=[JobStatus.QUEUED])
    assert [j.id for j in queued.jobs] == [c.id, b.id]
    both = await store.list(statuses=[JobStatus.QUEUED, JobStatus.RUNNING], owner="ann")
    assert [j.id for j in both.jobs] == [c.id, a.id]
    assert (await store.list(statuses=[])).jobs == []
    assert (await store.list(owner="nobody")).jobs == []


async def test_last_page_has_no_cursor(store: JobStore) -> None:
    for i in range(3):
        await store.enqueue(new_job(), now=T0 + i)
    page = await store.list(limit=3)
    assert len(page.jobs) == 3 and page.next_cursor is None


async def test_bad_cursor_is_invalid_request(store: JobStore) -> None:
    with pytest.raises(InvalidRequest):
        await store.list(cursor="not-a-cursor!")


async def test_pages_across_several_statuses_keep_newest_first(store: JobStore) -> None:
    from comfyrun.core.state import Event

    expected = []
    for i in range(9):
        job, _ = await store.enqueue(new_job(priority=10 if i % 3 == 0 else 0), now=T0 + i)
        if i % 3 == 0:
            claimed = await store.claim("w", 30, now=T0 + 50)
            assert claimed is not None and claimed.id == job.id
            if i % 2 == 0:
                await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
                expected.append(job.id)
        else:
            expected.append(job.id)
    wanted = [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.QUEUED]
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list(statuses=wanted, limit=2, cursor=cursor)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(expected))


async def test_unfinished_for_client_finds_a_clients_queued_and_running_jobs(
    store: JobStore,
) -> None:
    """Newest first, queued and running only, that client id's alone (and an owner's)."""
    from comfyrun.store.base import COMFY_CLIENT_ID

    def meta(client: str) -> dict[str, str]:
        return {COMFY_CLIENT_ID: client, "other": client}

    first, _ = await store.enqueue(new_job(metadata=meta("c1"), owner="ann"), now=T0)
    await store.enqueue(new_job(metadata=meta("c2")), now=T0 + 1)
    await store.enqueue(new_job(metadata={"other": "c1"}), now=T0 + 2)
    claimed = await store.claim("w", 30, now=T0 + 3)
    assert claimed is not None and claimed.id == first.id
    later, _ = await store.enqueue(new_job(metadata=meta("c1"), owner="bob"), now=T0 + 4)
    done, _ = await store.enqueue(new_job(metadata=meta("c1")), now=T0 + 5)
    await store.delete(done.id)
    found = await store.unfinished_for_client("c1")
    assert [j.id for j in found] == [later.id, first.id]
    assert [j.id for j in await store.unfinished_for_client("c1", owner="ann")] == [first.id]
    assert [j.id for j in await store.unfinished_for_client("c1", limit=1)] == [later.id]
    assert await store.unfinished_for_client("nobody") == []
    await store.transition(first.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    assert [j.id for j in await store.unfinished_for_client("c1")] == [later.id]


async def test_finished_since_lists_ends_in_the_order_they_came(store: JobStore) -> None:
    """The jobs that ended at or after a time, in the order they ended (then by id), whenever
    each was submitted; unfinished ones never."""
    jobs = [(await store.enqueue(new_job(), now=T0 + i))[0] for i in range(4)]
    for i in range(4):
        claimed = await store.claim("w1", 60, now=T0 + 10 + i)
        assert claimed is not None and claimed.id == jobs[i].id
    never_ran, _ = await store.enqueue(new_job(), now=T0 + 5)
    # the first submitted ends last; one is canceled while queued; the last runs on
    await store.transition(jobs[1].id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 20)
    await store.transition(jobs[2].id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 21)
    await store.transition(never_ran.id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0 + 21)
    await store.transition(jobs[0].id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 30)

    found = await store.finished_since(T0)
    tied = sorted([jobs[2].id, never_ran.id])
    assert [e.id for e in found] == [jobs[1].id, *tied, jobs[0].id]
    first = found[0]
    assert (first.status, first.created_at, first.started_at, first.finished_at) == (
        JobStatus.SUCCEEDED,
        T0 + 1,
        T0 + 11,
        T0 + 20,
    )
    by_id = {e.id: e for e in found}
    assert by_id[jobs[2].id].status is JobStatus.FAILED
    assert (by_id[never_ran.id].status, by_id[never_ran.id].started_at) == (
        JobStatus.CANCELED,
        None,
    )
    assert [e.id for e in await store.finished_since(T0 + 21)] == [*tied, jobs[0].id]
    assert [e.id for e in await store.finished_since(T0 + 21, limit=1)] == [tied[0]]
    assert await store.finished_since(T0 + 31) == []


async def test_stamps_list_as_list_does_and_get_many_reads_the_jobs(store: JobStore) -> None:
    """`stamps`: the jobs `list` would give (statuses, owner, newest first, up to the limit),
    each as its id, status, times and attempts; `get_many`: the jobs of the ids that exist."""
    from comfyrun.store.base import JobStamp

    a, _ = await store.enqueue(new_job(owner="ann"), now=T0)
    b, _ = await store.enqueue(new_job(owner="bob"), now=T0 + 1)
    c, _ = await store.enqueue(new_job(owner="ann"), now=T0 + 2)
    d, _ = await store.enqueue(new_job(), now=T0 + 3)
    for _ in range(2):
        claimed = await store.claim("w", 30, now=T0 + 5)
        assert claimed is not None
    done = await store.transition(a.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 6)
    assert done is not None
    statuses = [JobStatus.SUCCEEDED, JobStatus.RUNNING, JobStatus.QUEUED]
    for owner in (None, "ann", "nobody"):
        for limit in (1, 2, 10):
            listed = (await store.list(statuses=statuses, owner=owner, limit=limit)).jobs
            stamps = await store.stamps(statuses=statuses, owner=owner, limit=limit)
            assert stamps == [
                JobStamp(j.id, j.status, j.created_at, j.finished_at, j.attempts) for j in listed
            ]
    finished = await store.stamps(statuses=[JobStatus.SUCCEEDED])
    assert finished == [JobStamp(a.id, JobStatus.SUCCEEDED, T0, T0 + 6, 1)]
    assert await store.stamps(statuses=[]) == []
    got = await store.get_many([d.id, "nope", b.id, d.id])
    assert sorted(j.id for j in got) == sorted([b.id, d.id])
    assert {j.id: j for j in got}[d.id] == await store.get(d.id)
    assert await store.get_many([]) == [] and c.owner == "ann"
