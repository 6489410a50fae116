"""The claim loop's wait (dispatch.claim_wake): woken by the pool's changes and the store's
work, with one store wait kept from pass to pass while it waits for the same thing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from comfyrun.backends.pool import BackendPool, Slot
from comfyrun.dispatch import claim_wake
from comfyrun.dispatch.claim_wake import ClaimWake
from comfyrun.errors import StoreError


class WorkStore:
    """wait_for_work and work_token as a store has them, counting the waits begun."""

    def __init__(self) -> None:
        self.token = 0
        self.waits: list[tuple[float, int | None]] = []
        self.cancelled = 0
        self._work = asyncio.Event()

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        return self.token

    def add_work(self) -> None:
        self.token += 1
        self._work.set()
        self._work = asyncio.Event()

    async def wait_for_work(
        self, timeout: float, *, since: int | None = None, types: Sequence[str] | None = None
    ) -> None:
        self.waits.append((timeout, since))
        if since is not None and since != self.token:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._work.wait()
        except TimeoutError:
            return
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.fixture
def pool(ready_pool: BackendPool) -> BackendPool:
    """One backend, ready: its slots change as jobs come and go."""
    return ready_pool


def wake_of(pool: BackendPool, store: WorkStore, timeout: list[float]) -> ClaimWake:
    return ClaimWake(pool, store, ("comfy",), lambda: timeout[0])  # type: ignore[arg-type]


async def woken_by_a_bind(wake: ClaimWake, pool: BackendPool, token: int | None) -> Slot:
    """A wait on `token` that a job bound to a slot ends (told False: no news of work); the
    slot, bound."""
    waiting = asyncio.ensure_future(wake.wait(pool.generation, token))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    slot = pool.try_reserve()
    assert slot is not None
    slot.bind("j1")  # a slot changed: the loop passes again
    assert await asyncio.wait_for(waiting, 1) is False
    return slot


async def test_a_change_in_the_pool_ends_the_wait_and_the_store_wait_goes_on(
    pool: BackendPool,
) -> None:
    store = WorkStore()
    wake = wake_of(pool, store, [30.0])
    slot = await woken_by_a_bind(wake, pool, store.token)
    # the next pass waits on the same token: the same store wait, not a new one
    waiting = asyncio.ensure_future(wake.wait(pool.generation, store.token))
    await asyncio.sleep(0.01)
    slot.release(done=True)
    assert await asyncio.wait_for(waiting, 1) is False
    assert len(store.waits) == 1 and store.cancelled == 0
    # work: the store's wait ends, and the loop is told its last "nothing" is stale
    waiting = asyncio.ensure_future(wake.wait(pool.generation, store.token))
    await asyncio.sleep(0.01)
    store.add_work()
    assert await asyncio.wait_for(waiting, 1) is True
    await wake.close()


async def test_work_that_came_between_passes_is_not_lost(pool: BackendPool) -> None:
    store = WorkStore()
    wake = wake_of(pool, store, [30.0])
    token = store.token
    await woken_by_a_bind(wake, pool, token)
    store.add_work()  # while the loop makes its pass (the wait kept sees it)
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(wake.wait(pool.generation, token), 1) is True
    # a pass that read the new token waits anew
    waiting = asyncio.ensure_future(wake.wait(pool.generation, store.token))
    await asyncio.sleep(0.01)
    assert not waiting.done() and [since for _, since in store.waits] == [token, store.token]
    waiting.cancel()
    await wake.close()


async def test_a_moved_generation_or_token_returns_at_once(pool: BackendPool) -> None:
    store = WorkStore()
    wake = wake_of(pool, store, [30.0])
    old = pool.generation
    slot = pool.try_reserve()
    assert slot is not None
    slot.bind("j1")
    assert await asyncio.wait_for(wake.wait(old, store.token), 1) is False
    stale = store.token
    store.add_work()
    assert await asyncio.wait_for(wake.wait(pool.generation, stale), 1) is True
    await wake.close()


async def test_a_retry_due_sooner_starts_a_shorter_store_wait(pool: BackendPool) -> None:
    store = WorkStore()
    timeout = [30.0]
    wake = wake_of(pool, store, timeout)
    await woken_by_a_bind(wake, pool, store.token)
    timeout[0] = 0.05  # a job put back for a retry becomes runnable soon
    assert await asyncio.wait_for(wake.wait(pool.generation, store.token), 1) is True
    assert [t for t, _ in store.waits] == [30.0, 0.05] and store.cancelled == 1
    await wake.close()


async def test_close_stops_the_store_wait(pool: BackendPool) -> None:
    store = WorkStore()
    wake = wake_of(pool, store, [30.0])
    waiting = asyncio.ensure_future(wake.wait(pool.generation, store.token))
    await asyncio.sleep(0.01)
    waiting.cancel()  # the claim loop is cancelled first (Dispatcher.stop)
    await asyncio.sleep(0)
    await wake.close()
    assert store.cancelled == 1


async def test_work_a_pass_already_saw_makes_no_pass_more(pool: BackendPool) -> None:
    """The store's wait woke for work that came during a pass which read the new token (and
    so claimed it, or found it gone): the next wait waits anew, it does not pass again."""
    store = WorkStore()
    wake = wake_of(pool, store, [30.0])
    slot = await woken_by_a_bind(wake, pool, store.token)
    store.add_work()  # the kept wait wakes; the pass under way reads the new token
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(wake.wait(pool.generation, store.token))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert [since for _, since in store.waits] == [store.token - 1, store.token]
    slot.release(done=True)
    assert await asyncio.wait_for(waiting, 1) is False
    await wake.close()


async def test_a_failing_store_wait_pauses_the_loop(
    pool: BackendPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose wait for work fails at once (it is failing) does not have the claim loop
    spin: each failed wait is told after a pause. (Without it, tens of thousands of passes a
    second, each a failed wait.)"""
    monkeypatch.setattr(claim_wake, "WAIT_ERROR_PAUSE_S", 0.1)

    class FailingStore(WorkStore):
        async def wait_for_work(
            self, timeout: float, *, since: int | None = None, types: Sequence[str] | None = None
        ) -> None:
            self.waits.append((timeout, since))
            raise StoreError("SQLite is busy: database is locked")

    store = FailingStore()
    wake = wake_of(pool, store, [30.0])
    loop = asyncio.get_running_loop()
    passes, until = 0, loop.time() + 0.35
    while loop.time() < until:
        assert await wake.wait(pool.generation, store.token) is True  # (the loop passes)
        passes += 1
    assert 1 <= passes <= 4  # each pass after a pause of 0.1 s
    assert len(store.waits) == passes  # one failed wait a pass
    await wake.close()
