"""Every store: claim order within one priority follows `rank_at` (longest first with aging,
comfyrun.core.queue_order), while priorities and fair groups hold as before."""

from __future__ import annotations

from tests.support.store import new_job

from comfyrun.core.job import Job
from comfyrun.core.queue_order import QueueOrder, head_start
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0
AGING_S = 60.0


def ahead(cost: float) -> float:
    return head_start(cost, QueueOrder.LONGEST_FIRST, AGING_S)


async def claim_all(store: JobStore, now: float) -> list[str]:
    order = []
    while (job := await store.claim("w", 30, now=now)) is not None:
        order.append(job.id)
    return order


async def test_the_longest_waiting_job_is_claimed_first(store: JobStore) -> None:
    jobs: dict[float, Job] = {}
    for i, cost in enumerate([10.0, 80.0, 20.0, 320.0, 5.0]):
        jobs[cost], _ = await store.enqueue(new_job(head_start_s=ahead(cost)), now=T0 + i * 0.01)
    assert jobs[320.0].rank_at < jobs[80.0].rank_at < jobs[20.0].rank_at
    positions = {cost: await store.queue_position(j.id, now=T0 + 1) for cost, j in jobs.items()}
    assert positions == {320.0: 0, 80.0: 1, 20.0: 2, 10.0: 3, 5.0: 4}
    assert await claim_all(store, T0 + 1) == [jobs[c].id for c in (320.0, 80.0, 20.0, 10.0, 5.0)]


async def test_no_job_is_overtaken_by_one_submitted_past_the_aging_window(
    store: JobStore,
) -> None:
    short, _ = await store.enqueue(new_job(head_start_s=ahead(1.0)), now=T0)
    # far longer, but submitted more than the aging window later: after the short job
    late, _ = await store.enqueue(new_job(head_start_s=ahead(1e6)), now=T0 + AGING_S + 0.5)
    # submitted within the window: its head start takes it past the short one
    soon, _ = await store.enqueue(new_job(head_start_s=ahead(1e6)), now=T0 + 5)
    assert await claim_all(store, T0 + 100) == [soon.id, short.id, late.id]


async def test_priority_beats_any_head_start(store: JobStore) -> None:
    long_low, _ = await store.enqueue(new_job(head_start_s=ahead(1e6)), now=T0)
    short_high, _ = await store.enqueue(new_job(priority=1, head_start_s=0.0), now=T0 + 1)
    assert await store.next_priority(now=T0 + 2) == 1
    assert await claim_all(store, T0 + 2) == [short_high.id, long_low.id]


async def test_fair_groups_alternate_whatever_the_costs(store: JobStore) -> None:
    # owner "a" queues four long jobs first, owner "b" two short ones: turns alternate
    a = [
        (await store.enqueue(new_job(owner="a", head_start_s=ahead(500.0)), now=T0 + i))[0]
        for i in range(4)
    ]
    b = [
        (await store.enqueue(new_job(owner="b", head_start_s=ahead(1.0)), now=T0 + 10 + i))[0]
        for i in range(2)
    ]
    # (at one turn, the longer job first: a's before b's)
    expected = [a[0].id, b[0].id, a[1].id, b[1].id, a[2].id, a[3].id]
    assert await claim_all(store, T0 + 20) == expected


async def test_within_one_group_jobs_stay_in_submission_order(store: JobStore) -> None:
    first, _ = await store.enqueue(new_job(owner="a", head_start_s=ahead(1.0)), now=T0)
    second, _ = await store.enqueue(new_job(owner="a", head_start_s=ahead(1e6)), now=T0 + 1)
    assert await claim_all(store, T0 + 2) == [first.id, second.id]


async def test_without_a_head_start_the_queue_is_fifo(store: JobStore) -> None:
    jobs = [(await store.enqueue(new_job(), now=T0 + i))[0] for i in range(3)]
    assert all(j.rank_at == j.created_at for j in jobs)
    assert await claim_all(store, T0 + 5) == [j.id for j in jobs]


async def test_a_job_of_no_group_starts_at_the_queues_head(store: JobStore) -> None:
    """A job with no batch, owner or key (PostgreSQL queues it in one statement) takes the tag
    of the head of the queue at its priority: behind the turn being served, not before it."""
    a = [(await store.enqueue(new_job(owner="a"), now=T0 + i))[0] for i in range(4)]
    assert [j.fair_tag for j in a] == [0.0, 1.0, 2.0, 3.0]
    assert await claim_all_of(store, T0 + 5, 2) == [a[0].id, a[1].id]
    plain, created = await store.enqueue(new_job(), now=T0 + 6)
    assert created and plain.fair_tag == 2.0 and plain.owner is None
    seen = await store.get(plain.id)
    assert seen is not None and seen.fair_tag == 2.0
    assert [e.data.get("status") for e in await store.events_since(plain.id)] == ["queued"]
    assert await claim_all(store, T0 + 7) == [a[2].id, plain.id, a[3].id]
    alone, _ = await store.enqueue(new_job(), now=T0 + 8)  # an empty queue: from 0
    assert alone.fair_tag == 0.0


async def claim_all_of(store: JobStore, now: float, n: int) -> list[str]:
    return [job.id for _ in range(n) if (job := await store.claim("w", 30, now=now)) is not None]
