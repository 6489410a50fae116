"""The queue's bound: a count stands in for a while far from it, is exact near it, is shared
by the submissions that wait for it, and is the whole queue's whichever key submits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.api import memory_settings, tiny_workflow

from comfyrun.api.tenancy import OwnedStore
from comfyrun.core.tenancy import Principal, Scope
from comfyrun.errors import QueueFull
from comfyrun.queue_bound import COUNT_TTL_S, QueueBound
from comfyrun.service import JobService, Submission
from comfyrun.store.memory import MemoryStore


class Queue:
    """A queue of `n` jobs that counts its counts; `gate`, when set, holds each count."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.counts = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None
        self.now = 0.0

    async def count(self) -> int:
        self.counts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.n

    def bound(self, bound: int | None) -> QueueBound:
        return QueueBound(bound, 7, self.count, clock=lambda: self.now)


async def test_far_from_the_bound_a_count_stands_in_until_it_is_stale() -> None:
    queue = Queue(10)
    bound = queue.bound(1000)
    for _ in range(50):
        await bound.admit()
    assert queue.counts == 1
    queue.now += COUNT_TTL_S
    await bound.admit()
    assert queue.counts == 2


async def test_near_the_bound_it_counts_every_time() -> None:
    queue = Queue(8)
    bound = queue.bound(10)
    for _ in range(2):
        await bound.admit()
        queue.n += 1  # the job admitted is queued
    with pytest.raises(QueueFull) as refused:
        await bound.admit()  # 10 + 1 > 10
    assert refused.value.retry_after_s == 7
    assert queue.counts == 3  # near the bound: every admission counted
    queue.n = 5  # jobs were claimed
    await bound.admit(5)


async def test_submissions_that_find_the_count_stale_wait_for_one_count() -> None:
    queue = Queue(0)
    queue.gate = asyncio.Event()
    bound = queue.bound(20)
    admits = [asyncio.ensure_future(bound.admit()) for _ in range(32)]
    await asyncio.sleep(0.01)
    assert queue.counts == 1
    queue.gate.set()
    outcomes = await asyncio.gather(*admits, return_exceptions=True)
    assert queue.counts == 1
    # the one count said 0: 20 fit, the other 12 are refused
    assert sum(o is None for o in outcomes) == 20
    assert all(isinstance(o, QueueFull) for o in outcomes if o is not None)


async def test_a_failed_count_fails_its_waiters_and_the_next_counts_again() -> None:
    queue = Queue(0)
    queue.gate, queue.fail = asyncio.Event(), RuntimeError("store down")
    bound = queue.bound(100)
    admits = [asyncio.ensure_future(bound.admit()) for _ in range(3)]
    await asyncio.sleep(0.01)
    queue.gate.set()
    outcomes = await asyncio.gather(*admits, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes) and queue.counts == 1
    queue.fail = None
    await bound.admit()
    assert queue.counts == 2


async def test_a_waiter_that_goes_away_leaves_the_count_to_the_others() -> None:
    queue = Queue(0)
    queue.gate = asyncio.Event()
    bound = queue.bound(100)
    first, second = asyncio.ensure_future(bound.admit()), asyncio.ensure_future(bound.admit())
    await asyncio.sleep(0.01)
    first.cancel()
    queue.gate.set()
    await asyncio.wait_for(second, 5)
    assert first.cancelled() and queue.counts == 1


async def test_no_bound_admits_without_counting() -> None:
    queue = Queue(10**9)
    await queue.bound(None).admit(10**6)
    assert queue.counts == 0


async def test_every_keys_submissions_count_against_the_whole_queue(tmp_path: Path) -> None:
    """An API key's view of the service shares its bound, and the bound counts every key's
    jobs, not the submitting key's alone (queue_max is the queue's, keys have quotas)."""
    store = MemoryStore()
    await store.open()
    try:
        service = JobService(store, memory_settings(tmp_path, queue_max=3))

        def view(key: str) -> JobService:
            owned = OwnedStore(store, Principal(key, frozenset({Scope.SUBMIT}), key_id=key))
            return service.using(owned, owner=key)

        for i, key in enumerate(["alice", "alice", "bob"]):
            await view(key).submit(Submission(workflow=tiny_workflow(i)))
        for key in ("carol", "alice"):
            with pytest.raises(QueueFull):
                await view(key).submit(Submission(workflow=tiny_workflow(9)))
        assert service.queue_bound is view("dave").queue_bound
    finally:
        await store.close()
