"""Every store: claim order, next_run_at, leases and renewal, queue positions and counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.store.base import JobStore
from comfyrun.store.memory import MemoryStore
from comfyrun.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0


async def test_claim_empty_queue_is_none(store: JobStore) -> None:
    assert await store.claim("w1", 30, now=T0) is None


async def test_claim_takes_highest_priority_then_oldest(store: JobStore) -> None:
    low_old, _ = await store.enqueue(new_job(priority=0), now=T0)
    high_new, _ = await store.enqueue(new_job(priority=5), now=T0 + 2)
    high_old, _ = await store.enqueue(new_job(priority=5), now=T0 + 1)
    low_new, _ = await store.enqueue(new_job(priority=0), now=T0 + 3)
    order = []
    for _ in range(4):
        job = await store.claim("w", 30, now=T0 + 10)
        assert job is not None
        order.append(job.id)
    assert order == [high_old.id, high_new.id, low_old.id, low_new.id]
    assert await store.claim("w", 30, now=T0 + 10) is None


async def test_claim_sets_running_lease_and_attempt(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(), now=T0)
    job = await store.claim("w1", 30, now=T0 + 1)
    assert job is not None and job.id == queued.id
    assert job.status is JobStatus.RUNNING
    assert job.attempts == 1
    assert job.worker_id == "w1"
    assert job.lease_expires_at == T0 + 31
    assert job.started_at == T0 + 1
    assert await store.get(job.id) == job


async def test_claim_respects_next_run_at(store: JobStore) -> None:
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes

    await store.enqueue(new_job(), now=T0)
    job = await store.claim("w", 30, now=T0)
    assert job is not None
    await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 100)
    )
    assert await store.claim("w", 30, now=T0 + 99) is None
    again = await store.claim("w", 30, now=T0 + 100)
    assert again is not None and again.id == job.id and again.attempts == 2


async def test_renew_extends_only_the_holders_lease(store: JobStore) -> None:
    await store.enqueue(new_job(), now=T0)
    job = await store.claim("w1", 30, now=T0)
    assert job is not None
    assert await store.renew(job.id, "w1", 60, now=T0 + 20)
    renewed = await store.get(job.id)
    assert renewed is not None and renewed.lease_expires_at == T0 + 80
    assert not await store.renew(job.id, "w2", 60, now=T0 + 20)
    assert not await store.renew("unknown", "w1", 60, now=T0 + 20)
    after = await store.get(job.id)
    assert after is not None and after.lease_expires_at == T0 + 80


async def test_renew_fails_once_the_job_is_not_running(store: JobStore) -> None:
    from comfyrun.core.state import Event

    await store.enqueue(new_job(), now=T0)
    job = await store.claim("w1", 30, now=T0)
    assert job is not None
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 1)
    assert not await store.renew(job.id, "w1", 30, now=T0 + 2)


async def test_queue_position_follows_claim_order(store: JobStore) -> None:
    a, _ = await store.enqueue(new_job(priority=0), now=T0)
    b, _ = await store.enqueue(new_job(priority=1), now=T0 + 1)
    c, _ = await store.enqueue(new_job(priority=0), now=T0 + 2)
    assert await store.queue_position(b.id, now=T0 + 5) == 0
    assert await store.queue_position(a.id, now=T0 + 5) == 1
    assert await store.queue_position(c.id, now=T0 + 5) == 2
    claimed = await store.claim("w", 30, now=T0 + 5)
    assert claimed is not None and claimed.id == b.id
    assert await store.queue_position(b.id, now=T0 + 5) is None
    assert await store.queue_position(a.id, now=T0 + 5) == 0
    assert await store.queue_position("unknown") is None


async def test_queue_position_of_a_job_at_hand_counts_the_same(store: JobStore) -> None:
    """Given the job as just enqueued (or read), the count starts from it: the same answer
    as by its id."""
    a, _ = await store.enqueue(new_job(priority=0), now=T0)
    b, _ = await store.enqueue(new_job(priority=1), now=T0 + 1)
    c, _ = await store.enqueue(new_job(priority=0), now=T0 + 2)
    for job, ahead in ((b, 0), (a, 1), (c, 2)):
        assert await store.queue_position(job.id, now=T0 + 5, job=job) == ahead
        assert await store.queue_position(job.id, now=T0 + 5, limit=1, job=job) == min(ahead, 1)
    claimed = await store.claim("w", 30, now=T0 + 5)
    assert claimed is not None and claimed.id == b.id
    assert await store.queue_position(b.id, now=T0 + 5, job=claimed) is None  # running
    assert await store.queue_position(c.id, now=T0 + 5, job=a) == 1  # another job's: read


async def test_an_enqueue_counted_answers_the_position_it_was_committed_at(
    store: JobStore,
) -> None:
    """`enqueue_counted`: the job as `enqueue` stores it, with the position `queue_position`
    gives right after (capped alike); a replay of an idempotency key: that job, its position
    now; a job already claimed: no position."""
    from dataclasses import replace

    first, created, ahead = await store.enqueue_counted(new_job(priority=1), now=T0)
    assert created and ahead == 0 and first.status is JobStatus.QUEUED
    got = []
    for i, priority in enumerate([0, 2, 0, 1]):
        job, created, ahead = await store.enqueue_counted(
            new_job(priority=priority), now=T0 + 1 + i
        )
        assert created and ahead == await store.queue_position(job.id, now=T0 + 1 + i)
        got.append(ahead)
    assert got == [1, 0, 3, 2]
    assert (await store.get(first.id)) == first
    _, _, capped = await store.enqueue_counted(new_job(), limit=2, now=T0 + 9)
    assert capped == 2
    keyed = replace(new_job(priority=5), idempotency_key="k", request_hash="h")
    job, created, ahead = await store.enqueue_counted(keyed, now=T0 + 10)
    assert created and ahead == 0
    claimed = await store.claim("w", 30, now=T0 + 11)
    assert claimed is not None and claimed.id == job.id
    again, created, ahead = await store.enqueue_counted(keyed, now=T0 + 12)
    assert (again.id, created, again.status, ahead) == (job.id, False, JobStatus.RUNNING, None)
    later, _, _ = await store.enqueue_counted(replace(new_job(), idempotency_key="j"), now=T0)
    again, created, ahead = await store.enqueue_counted(
        replace(new_job(), idempotency_key="j"), now=T0 + 13
    )
    assert again.id == later.id and not created
    assert ahead == await store.queue_position(later.id, now=T0 + 13)


async def test_counts_and_oldest_queued(store: JobStore) -> None:
    assert await store.oldest_queued_at() is None
    counts = await store.counts()
    assert set(counts) == set(JobStatus) and sum(counts.values()) == 0
    for i in range(3):
        await store.enqueue(new_job(), now=T0 + i)
    await store.claim("w", 30, now=T0 + 5)
    counts = await store.counts()
    assert counts[JobStatus.QUEUED] == 2
    assert counts[JobStatus.RUNNING] == 1
    assert counts[JobStatus.FAILED] == 0
    assert await store.oldest_queued_at() == T0 + 1


async def test_unfinished_counts_leave_the_history_out(store: JobStore) -> None:
    from comfyrun.core.state import Event

    for i in range(4):
        await store.enqueue(new_job(), now=T0 + i)
    done = await store.claim("w", 30, now=T0 + 5)
    running = await store.claim("w", 30, now=T0 + 5)
    assert done is not None and running is not None
    await store.transition(done.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 6)
    everything = await store.counts()
    assert (everything[JobStatus.QUEUED], everything[JobStatus.RUNNING]) == (2, 1)
    assert everything[JobStatus.SUCCEEDED] == 1
    unfinished = await store.counts(unfinished=True)
    assert set(unfinished) == set(JobStatus)
    assert (unfinished[JobStatus.QUEUED], unfinished[JobStatus.RUNNING]) == (2, 1)
    assert unfinished[JobStatus.SUCCEEDED] == 0
    # where a store counts at once (SQLite's loop, the memory store), the same counts
    for args in ({}, {"unfinished": True}):
        now = store.counts_now(**args)
        assert now is None or now == await store.counts(**args)
    if isinstance(store, (MemoryStore, SQLiteStore)):
        assert store.counts_now(unfinished=True) == unfinished


async def test_concurrent_claimers_never_share_a_job(store: JobStore) -> None:
    import asyncio

    ids = {(await store.enqueue(new_job(), now=T0 + i))[0].id for i in range(40)}

    async def worker(name: str) -> list[str]:
        got = []
        while (job := await store.claim(name, 30, now=T0 + 100)) is not None:
            got.append(job.id)
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(8)))
    claimed = [job_id for got in results for job_id in got]
    assert sorted(claimed) == sorted(ids)


async def test_concurrent_same_key_enqueues_make_one_job(store: JobStore) -> None:
    import asyncio

    results = await asyncio.gather(
        *(store.enqueue(new_job(idempotency_key="k", request_hash="h"), now=T0) for _ in range(8))
    )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert (await store.counts())[JobStatus.QUEUED] == 1


async def test_queue_position_puts_waiting_jobs_after_runnable_ones(store: JobStore) -> None:
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes

    async def delayed(priority: int, created: float, until: float) -> str:
        job, _ = await store.enqueue(new_job(priority=priority + 100), now=created)
        claimed = await store.claim("w", 30, now=created)
        assert claimed is not None and claimed.id == job.id
        await store.transition(
            job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=until)
        )
        return job.id

    late_high = await delayed(5, T0, T0 + 500)  # waiting, so behind every runnable job
    late_low = await delayed(0, T0 + 1, T0 + 400)
    a, _ = await store.enqueue(new_job(priority=0), now=T0 + 2)
    b, _ = await store.enqueue(new_job(priority=1), now=T0 + 3)
    now = T0 + 10
    positions = [await store.queue_position(i, now=now) for i in (b.id, a.id, late_high, late_low)]
    assert positions == [0, 1, 2, 3]
    # once its time comes, the high-priority job is first again
    assert await store.queue_position(late_high, now=T0 + 500) == 0
    assert await store.queue_position(late_low, now=T0 + 500) == 1


async def test_queue_position_with_a_limit_stops_counting(store: JobStore) -> None:
    ids = [(await store.enqueue(new_job(), now=T0 + i))[0].id for i in range(6)]
    assert await store.queue_position(ids[5], now=T0 + 10) == 5
    assert await store.queue_position(ids[5], now=T0 + 10, limit=3) == 3
    assert await store.queue_position(ids[1], now=T0 + 10, limit=3) == 1
    assert await store.queue_position(ids[0], now=T0 + 10, limit=0) == 0


async def test_a_capped_queue_position_is_the_count_up_to_the_cap(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every cap, every job of a queue with priorities and waiting jobs: min(position, cap),
    also where the SQL stores count a few, then check whether the job is past the cap."""
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes

    if hasattr(store, "first_count"):
        monkeypatch.setattr(store, "first_count", 2)
    ids = []
    for i, priority in enumerate([0, 3, 0, 1, 3, 0, 0, 1, 0]):
        ids.append((await store.enqueue(new_job(priority=priority), now=T0 + i))[0].id)
    late, _ = await store.enqueue(new_job(priority=9), now=T0 + 20)
    assert (await store.claim("w", 30, now=T0 + 20)) is not None
    await store.transition(
        late.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 99)
    )
    ids.append(late.id)
    now = T0 + 30
    exact = {i: await store.queue_position(i, now=now) for i in ids}
    assert sorted(exact.values()) == list(range(len(ids)))
    for cap in range(len(ids) + 2):
        for i in ids:
            assert await store.queue_position(i, now=now, limit=cap) == min(exact[i], cap), (
                cap,
                exact[i],
            )


async def test_work_token_changes_whenever_a_job_may_have_become_claimable(
    store: JobStore,
) -> None:
    """A claim that found nothing stays right until the token changes: an enqueue and a job
    put back in the queue each change it; a claim or a finish does not need to."""
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes

    before = store.work_token()
    if before is None:
        pytest.skip("this store does not know when work comes")
    assert await store.claim("w", 30, now=T0) is None
    await store.enqueue(new_job(), now=T0)
    await token_changes(store, before)
    job = await store.claim("w", 30, now=T0)
    assert job is not None
    claimed = store.work_token()
    await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0)
    )
    await token_changes(store, claimed)
    assert await store.claim("w", 30, now=T0 + 1) is not None


async def token_changes(store: JobStore, since: int | None) -> None:
    """At once where the store wakes its own process on commit; PostgreSQL's NOTIFY comes back
    over its listening connection a moment later."""
    async with asyncio.timeout(10):
        while store.work_token() == since:
            await store.wait_for_work(0.05)


async def test_claim_choice_sees_the_window_in_claim_order_and_takes_its_pick(
    store: JobStore,
) -> None:
    from comfyrun.store.base import ClaimChoice

    jobs = [
        (await store.enqueue(new_job(priority=p), now=T0 + i))[0]
        for i, p in enumerate([0, 5, 0, 5, 0])
    ]
    seen: list[list[str]] = []

    def pick(candidates: object) -> int:
        assert isinstance(candidates, Sequence)  # (the SQL stores decode each when looked at)
        seen.append([c.id for c in candidates])
        return 2

    job = await store.claim("w1", 30, now=T0 + 10, choice=ClaimChoice(window=3, pick=pick))
    # claim order: priority 5 (oldest first), then priority 0; the window is its first three
    assert seen == [[jobs[1].id, jobs[3].id, jobs[0].id]]
    assert job is not None and job.id == jobs[0].id
    assert job.status is JobStatus.RUNNING and job.worker_id == "w1" and job.attempts == 1
    assert job.lease_expires_at == T0 + 40
    assert await store.get(job.id) == job
    # the others stay queued, in their order
    rest = [await store.claim("w2", 30, now=T0 + 10) for _ in range(4)]
    assert [j.id for j in rest if j is not None] == [jobs[1].id, jobs[3].id, jobs[2].id, jobs[4].id]


async def test_claim_choice_out_of_range_takes_the_best_and_skips_unrunnable(
    store: JobStore,
) -> None:
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes, ClaimChoice

    first, _ = await store.enqueue(new_job(), now=T0)
    later, _ = await store.enqueue(new_job(), now=T0 + 1)
    claimed = await store.claim("w", 30, now=T0 + 2)
    assert claimed is not None and claimed.id == first.id
    await store.transition(
        first.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 100)
    )
    windows: list[int] = []

    def pick(candidates: object) -> int:
        assert isinstance(candidates, Sequence)
        windows.append(len(candidates))
        return 7

    job = await store.claim("w", 30, now=T0 + 3, choice=ClaimChoice(window=5, pick=pick))
    assert job is not None and job.id == later.id  # the retry waits for its next_run_at
    assert windows == [1]
    assert await store.claim("w", 30, now=T0 + 3, choice=ClaimChoice(window=5, pick=pick)) is None
    assert windows == [1]  # an empty queue asks nothing


async def test_a_typed_work_token_changes_when_work_of_its_types_comes(store: JobStore) -> None:
    """Every store: the token of a job's type moves with its enqueue and its requeue. A store
    that tells types apart in its wake-ups (SQLite in-process, PostgreSQL by its NOTIFY) keeps
    the token of other types still, and a typed wait is not ended by their work: a lane does
    not claim for nothing."""
    from comfyrun.core.state import Event
    from comfyrun.store.base import Changes

    if store.work_token(["a"]) is None:
        pytest.skip("this store does not know when work comes")
    for_a, for_b = store.work_token(["a"]), store.work_token(["b"])
    await store.enqueue(new_job(type="a"), now=T0)
    async with asyncio.timeout(10):
        while store.work_token(["a"]) == for_a:
            await store.wait_for_work(0.05, types=["a"])
    job = await store.claim("w", 30, now=T0, types=["a"])
    assert job is not None
    for_a = store.work_token(["a"])
    await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0)
    )
    async with asyncio.timeout(10):
        while store.work_token(["a"]) == for_a:
            await store.wait_for_work(0.05, types=["a"])
    if type(store).__name__ not in ("SQLiteStore", "PostgresStore"):
        return  # any work counts for it: the rest is SQLite's and PostgreSQL's
    assert store.work_token(["b"]) == for_b
    waiting = asyncio.ensure_future(store.wait_for_work(10, since=for_b, types=["b"]))
    await asyncio.sleep(0.05)
    seen = store.work_token()
    await store.enqueue(new_job(type="a"), now=T0 + 1)
    await token_changes(store, seen)  # type a's wake-up has come (PostgreSQL: its NOTIFY)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # woken by type a's work, it waits on
    assert store.work_token(["b"]) == for_b
    await store.enqueue(new_job(type="b"), now=T0 + 2)
    async with asyncio.timeout(5):
        await waiting
    assert store.work_token(["b"]) != for_b


async def test_claim_choice_of_none_takes_no_job_and_leaves_the_queue_as_it_was(
    store: JobStore,
) -> None:
    """A worker whose staging set is full takes none of the jobs that must download first
    (dispatch.staging): its pick says None, and the claim finds nothing."""
    from comfyrun.store.base import ClaimChoice

    first, _ = await store.enqueue(new_job(), now=T0)
    second, _ = await store.enqueue(new_job(), now=T0 + 1)
    choice = ClaimChoice(window=5, pick=lambda candidates: None)
    assert await store.claim("w", 30, now=T0 + 2, choice=choice) is None
    for queued in (first, second):
        kept = await store.get(queued.id)
        assert kept is not None and kept.status is JobStatus.QUEUED and kept.attempts == 0
    taken = await store.claim("w", 30, now=T0 + 2)
    assert taken is not None and taken.id == first.id
