"""ComfyUI's queue_remaining as the face counts it: a short queue's count is made anew whenever
a fresh one is asked for (exact), however long it took; a large queue's (PostgreSQL counts its
rows) stands in for a while and is shared by whoever asks meanwhile, so counting takes the
store a bounded share of its time."""

from __future__ import annotations

import asyncio

import pytest

from comfyrun.queue_remaining import COST_SHARE, LARGE, REMAINING_TTL_S, RemainingCount


class Queue:
    """A queue of `n` jobs whose count takes `took` seconds of its clock; `gate`, when set,
    holds each count until it is set."""

    def __init__(self, n: int, took: float) -> None:
        self.n = n
        self.took = took
        self.counts = 0
        self.now = 0.0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def count(self) -> int:
        self.counts += 1
        if self.gate is not None:
            await self.gate.wait()
        self.now += self.took
        if self.fail is not None:
            raise self.fail
        return self.n

    def counter(self) -> RemainingCount:
        return RemainingCount(self.count, clock=lambda: self.now)


@pytest.mark.parametrize("took", [0.0002, 0.05])  # (on a loaded machine a count waits too)
async def test_a_short_queue_is_counted_anew_for_every_fresh_ask(took: float) -> None:
    queue = Queue(3, took=took)
    remaining = queue.counter()
    assert await remaining.get(fresh=True) == 3
    queue.n = 2  # a prompt ended
    assert await remaining.get(fresh=True) == 2  # told at once, exactly
    assert queue.counts == 2
    queue.n = 5
    assert await remaining.get(fresh=False) == 2  # a greeting takes one a moment old
    queue.now += REMAINING_TTL_S
    assert await remaining.get(fresh=False) == 5
    assert queue.counts == 3


async def test_a_large_queue_s_count_stands_in_for_a_share_of_its_cost() -> None:
    took = 0.025  # PostgreSQL counting 100,000 queued jobs
    queue = Queue(100_000, took=took)
    assert queue.n >= LARGE
    remaining = queue.counter()
    assert await remaining.get(fresh=True) == 100_000
    queue.n -= 1
    queue.now += took * COST_SHARE / 2
    assert await remaining.get(fresh=True) == 100_000  # stands in
    assert queue.counts == 1
    queue.now += took * COST_SHARE
    assert await remaining.get(fresh=True) == 99_999  # stale: counted again
    assert queue.counts == 2


async def test_asks_while_a_large_queue_is_counted_share_the_count() -> None:
    queue = Queue(100_000, took=0.025)
    remaining = queue.counter()
    await remaining.get(fresh=True)
    queue.now += 1.0
    queue.gate = asyncio.Event()
    first = asyncio.create_task(remaining.get(fresh=True))
    await asyncio.sleep(0)
    others = [asyncio.create_task(remaining.get(fresh=True)) for _ in range(30)]
    await asyncio.sleep(0)
    first.cancel()  # the first asker leaves; the count goes on for the others
    queue.n = 99_990
    queue.gate.set()
    assert await asyncio.gather(*others) == [99_990] * 30
    assert queue.counts == 2  # one for all thirty-one asks
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_short_queue_s_counts_are_not_shared() -> None:
    """Asks while a short queue's count is under way make their own: each may have begun
    after a change the one under way did not see."""
    queue = Queue(4, took=0.05)
    remaining = queue.counter()
    await remaining.get(fresh=True)
    queue.gate = asyncio.Event()
    asks = [asyncio.create_task(remaining.get(fresh=True)) for _ in range(3)]
    await asyncio.sleep(0)
    queue.gate.set()
    assert await asyncio.gather(*asks) == [4, 4, 4]
    assert queue.counts == 4


async def test_a_failed_count_fails_its_askers_and_the_next_ask_counts_again() -> None:
    queue = Queue(7, took=0.03)
    remaining = queue.counter()
    queue.fail = RuntimeError("store down")
    with pytest.raises(RuntimeError, match="store down"):
        await remaining.get(fresh=True)
    queue.fail = None
    assert await remaining.get(fresh=True) == 7
    assert queue.counts == 2


class CountedAtOnce(Queue):
    """A store that counts at once (SQLite's kept counts, read on the loop's thread) unless
    `busy` (its reader would have to wait): then only by the awaited count."""

    def __init__(self, n: int) -> None:
        super().__init__(n, took=0.0)
        self.busy = False
        self.at_once = 0

    def count_now(self) -> int | None:
        if self.busy:
            return None
        self.at_once += 1
        return self.n

    def counter(self) -> RemainingCount:
        return RemainingCount(self.count, count_now=self.count_now, clock=lambda: self.now)


async def test_a_store_that_counts_at_once_is_asked_there_and_then_without_a_task() -> None:
    queue = CountedAtOnce(3)
    remaining = queue.counter()
    assert remaining.now(fresh=True) == 3
    queue.n = 2  # a prompt ended: a fresh ask is told exactly, at once
    assert remaining.now(fresh=True) == 2
    queue.n = 7
    assert remaining.now(fresh=False) == 2  # a greeting takes one a moment old
    assert await remaining.get(fresh=True) == 7  # `get` asks there first too
    assert (queue.at_once, queue.counts) == (3, 0)  # no awaited count at all
    queue.n = 100_000  # however long the queue: the store counts it at once
    assert remaining.now(fresh=True) == 100_000
    queue.n = 99_999
    assert remaining.now(fresh=True) == 99_999


async def test_where_it_cannot_count_at_once_now_says_so_and_get_waits_for_a_count() -> None:
    queue = CountedAtOnce(4)
    remaining = queue.counter()
    queue.busy = True
    assert remaining.now(fresh=True) is None
    assert await remaining.get(fresh=True) == 4
    assert queue.counts == 1
    assert remaining.now(fresh=False) == 4  # that count stands in for a greeting
    assert RemainingCount(queue.count).now(fresh=True) is None  # (PostgreSQL: none at once)
