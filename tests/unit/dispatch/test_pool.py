"""The backend pool without sockets: slots, managed processes (faked), quarantine restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from tests.support.engine import FakeClient, FakeServer, until
from tests.unit.dispatch.conftest import HEALTH, FakeProcess

from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.pipeline import MAX_PIPELINE
from comfyrun.core.placement import BackendState
from comfyrun.errors import BackendError


def managed_pool(*, broken: bool = False) -> tuple[BackendPool, FakeProcess]:
    server = FakeServer(name="m")
    process = FakeProcess(server, broken=broken)
    pool = BackendPool.from_specs(
        [BackendSpec(name="m", managed=object())],
        lambda url: FakeClient(server),
        process_factory=lambda spec: process,
        health=HEALTH,
    )
    return pool, process


async def test_slots_fill_a_backend_to_two_and_free_on_release(ready_pool: BackendPool) -> None:
    pool = ready_pool
    first, second = pool.try_reserve(), pool.try_reserve()
    assert first is not None and second is not None and pool.try_reserve() is None
    first.bind("j1")
    assert pool.snapshot()[0].state == "busy" and pool.snapshot()[0].inflight == 2
    waiter = asyncio.ensure_future(pool.reserve())
    await asyncio.sleep(0)
    assert not waiter.done()
    first.release(done=True)
    first.release(done=True)  # idempotent
    third = await asyncio.wait_for(waiter, 1)
    assert third is not None and third.backend.name == "a"
    assert pool.snapshot()[0].jobs_done == 1


async def test_listeners_of_states_only_are_not_called_for_each_slot_change() -> None:
    """A job's slot changes several times (bound, held, executed, released): every listener
    hears of it unless it asked for state changes only (the catalog, which refetches a
    backend that comes up); a change of a backend's state reaches both."""
    server = FakeServer(name="a")
    pool = BackendPool.from_specs(
        [BackendSpec(name="a", url="fake://a")], lambda url: FakeClient(server), health=HEALTH
    )
    heard = {"all": 0, "states": 0}

    def hear(kind: str) -> Callable[[], None]:
        return lambda: heard.__setitem__(kind, heard[kind] + 1)

    pool.add_listener(hear("all"))
    pool.add_listener(hear("states"), slots=False)
    await pool.start()
    try:
        assert await pool.wait_ready(5)
        assert heard["states"] >= 1 and heard["all"] >= heard["states"]  # it came up
        before = dict(heard)
        generation = pool.generation
        slot = pool.try_reserve()
        assert slot is not None
        slot.bind("j1")
        slot.hold(True)
        slot.hold(False)
        slot.executed_prompt()
        slot.release(done=True)
        assert heard["all"] - before["all"] == 5 and heard["states"] == before["states"]
        assert pool.generation == generation + 5  # a dispatcher waiting on changes wakes
        pool.set_draining(slot.backend, True)
        assert heard["all"] - before["all"] == 6 and heard["states"] == before["states"] + 1
    finally:
        await pool.stop()
        await server.stop()


async def test_a_managed_backend_starts_lazily_and_reports_busy_to_its_process() -> None:
    pool, process = managed_pool()
    await pool.start()
    try:
        assert pool.snapshot()[0].state == "stopped" and pool.snapshot()[0].managed
        slot = await asyncio.wait_for(pool.reserve(), 1)  # a lazy backend takes a job
        assert slot is not None
        slot.bind("j1")
        await slot.backend.ready_client()
        assert process.state == "ready" and pool.snapshot()[0].url == "fake://m"
        slot.release(done=True)
        assert process.busy == [True, False]
        assert pool.snapshot()[0].log_tail == ["line"]
    finally:
        await pool.stop()
        await process.server.stop()


async def test_a_stuck_managed_backend_is_restarted_but_a_crashed_one_is_left_to_its_supervisor() -> (
    None
):
    pool, process = managed_pool()
    await pool.start()
    try:
        backend = pool.backends[0]
        await backend.ready_client()
        pool.mark_unhealthy(backend, "stuck", quarantine=False)
        await asyncio.sleep(0.05)
        assert process.restarts == 0
        pool.mark_unhealthy(backend, "prompt did not stop", quarantine=True)
        await until(lambda: process.restarts == 1)
        process._set("crashed")
        pool.mark_unhealthy(backend, "gone", quarantine=True)
        await asyncio.sleep(0.05)
        assert process.restarts == 1
    finally:
        await pool.stop()
        await process.server.stop()


async def test_a_pool_whose_backends_are_all_in_error_is_hopeless() -> None:
    pool, process = managed_pool(broken=True)
    await pool.start()
    try:
        slot = await asyncio.wait_for(pool.reserve(), 1)
        assert slot is not None
        with pytest.raises(BackendError):
            await slot.backend.ready_client()
        slot.release()
        assert pool.hopeless
        assert await asyncio.wait_for(pool.reserve(), 1) is None
        assert pool.snapshot()[0].state == BackendState.ERROR.value
        assert "no main.py" in pool.problems()
    finally:
        await pool.stop()
        await process.server.stop()


async def test_a_backend_down_at_start_is_probed_until_it_answers() -> None:
    server = FakeServer(name="late", up=False)
    clients: list[FakeClient] = []

    def factory(url: str) -> FakeClient:
        clients.append(FakeClient(server))
        return clients[-1]

    pool = BackendPool.from_specs(
        [BackendSpec(name="late", url="fake://late")], factory, health=HEALTH
    )
    await pool.start()
    try:
        await until(lambda: len(clients) >= 2)  # probed again and again while down
        assert pool.snapshot()[0].state == "unhealthy"
        assert pool.try_reserve() is None
        server.up = True
        await until(lambda: pool.snapshot()[0].state == "ready")
        assert [c.closed for c in clients] == [True] * (len(clients) - 1) + [False]
    finally:
        await pool.stop()
        await server.stop()


async def test_a_backend_ready_again_clears_its_last_error(ready_pool: BackendPool) -> None:
    """(It stayed after the backend answered again, and `comfyrun backends` showed a ready
    backend with an old error.)"""
    pool = ready_pool
    backend = pool.get("a")
    assert backend is not None
    await until(lambda: pool.snapshot()[0].state == "ready")
    pool.mark_unhealthy(backend, "prompt p did not stop after a cancel", quarantine=False)
    (info,) = pool.snapshot()
    assert info.last_error == "prompt p did not stop after a cancel"
    assert info.last_error_at is not None
    await until(lambda: pool.snapshot()[0].last_error is None)  # the next probe answered
    (info,) = pool.snapshot()
    assert info.state == "ready" and info.last_error_at is None


async def test_a_backend_that_stays_down_keeps_its_last_error() -> None:
    server = FakeServer(name="late", up=False)
    pool = BackendPool.from_specs(
        [BackendSpec(name="late", url="fake://late")], lambda url: FakeClient(server), health=HEALTH
    )
    await pool.start()
    try:
        await until(lambda: pool.snapshot()[0].last_error is not None)
        first = pool.snapshot()[0]
        assert first.state == "unhealthy" and first.last_error_at is not None
        await asyncio.sleep(0.2)  # probed again and again, failing: the error stays, its time too
        assert pool.snapshot()[0].last_error_at == first.last_error_at
        server.up = True
        await until(lambda: pool.snapshot()[0].state == "ready")
        await until(lambda: pool.snapshot()[0].last_error is None)
    finally:
        await pool.stop()
        await server.stop()


async def test_held_prompts_and_a_prompt_done_in_comfyui_frees_its_room() -> None:
    server = FakeServer(name="a")
    pool = BackendPool.from_specs(
        [BackendSpec(name="a", url="fake://a"), BackendSpec(name="b", url="fake://b")],
        lambda url: FakeClient(server),
        health=HEALTH,
    )
    await pool.start()
    try:
        assert await pool.wait_ready(5)
        running, held = pool.try_reserve(on="a"), pool.try_reserve(on="a")
        assert running is not None and held is not None and pool.try_reserve(on="a") is None
        running.bind("j1", priority=0)
        held.bind("j2", priority=3)
        generation = pool.generation
        held.hold(True)
        assert pool.generation > generation  # a change the dispatcher wakes for
        assert [(h.job_id, h.backend, h.priority) for h in pool.held_prompts()] == [("j2", "a", 3)]
        assert pool.running_jobs() == {"a": ("j1", running.claimed)}
        alone = pool.try_reserve(on="b")
        assert alone is not None
        alone.bind("j3")
        alone.hold(True)  # submitted to an idle backend: about to start, nothing to take back
        assert [h.job_id for h in pool.held_prompts()] == ["j2"]
        alone.release(done=True)
        held.hold(False)  # it started
        assert pool.held_prompts() == []
        backend = pool.get("a")
        assert backend is not None
        running.executed_prompt()  # ComfyUI is done with it: room while outputs are collected
        assert backend.inflight == 1
        assert pool.try_reserve(on="a") is not None
        running.release(done=True)
        assert backend.inflight == 2
    finally:
        await pool.stop()


async def test_running_jobs_and_a_moved_job_keeps_its_claim_order() -> None:
    server = FakeServer(name="a")
    pool = BackendPool.from_specs(
        [BackendSpec(name="a", url="fake://a"), BackendSpec(name="b", url="fake://b")],
        lambda url: FakeClient(server),
        health=HEALTH,
    )
    await pool.start()
    try:
        assert await pool.wait_ready(5)
        first, second = pool.try_reserve(on="a"), pool.try_reserve(on="a")
        assert first is not None and second is not None
        first.bind("j1")
        second.bind("j2")
        second.hold(True)
        assert pool.running_jobs() == {"a": ("j1", first.claimed)}
        # j2 taken back and run on b: bound later, still claimed when it first was
        claimed = second.claimed
        second.release()
        moved = pool.try_reserve(on="b")
        assert moved is not None
        moved.bind("j2", claimed=claimed)
        assert moved.seq > claimed and moved.claimed == claimed
        assert pool.running_jobs() == {"a": ("j1", first.claimed), "b": ("j2", claimed)}
        first.executed_prompt()  # done in ComfyUI: a runs nothing now
        assert pool.running_jobs() == {"b": ("j2", claimed)}
    finally:
        await pool.stop()


async def test_rooms_given_back_unused_leave_the_round_robin_as_it_was() -> None:
    """Several rooms reserved at once (claims in flight together), some given back unused in
    any order, some bound: the round robin is as if only the bound ones had been reserved."""
    server = FakeServer(name="a")
    names = ("a", "b", "c")
    pool = BackendPool.from_specs(
        [BackendSpec(name=n, url=f"fake://{n}") for n in names],
        lambda url: FakeClient(server),
        health=HEALTH,
    )
    await pool.start()
    try:
        assert await pool.wait_ready(5)

        def turns() -> dict[str, int]:
            return {n: b.last_assigned for n in names if (b := pool.get(n)) is not None}

        used = pool.try_reserve()
        assert used is not None
        used.bind("j1")
        before = turns()
        for order in ((0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (2, 0, 4, 1, 3)):
            rooms = [pool.try_reserve() for _ in range(5)]  # a backend twice, some of them
            assert all(r is not None for r in rooms)
            for i in order:
                room = rooms[i]
                assert room is not None
                room.release()
            assert turns() == before, order
        # a room bound between two given back: its turn stands, theirs do not
        first, bound, last = pool.try_reserve(), pool.try_reserve(), pool.try_reserve()
        assert first is not None and bound is not None and last is not None
        bound.bind("j2")
        expected = {**before, bound.backend.name: bound.backend.last_assigned}
        first.release()
        last.release()
        assert turns() == expected
    finally:
        await pool.stop()


async def test_a_backend_found_down_resolves_its_down_futures(ready_pool: BackendPool) -> None:
    """What a run waits on for its backend going down (Backend.down_future): resolved when
    the pool takes the backend out of service, at once while it is down; one given up (the
    run ended first) is forgotten."""
    pool = ready_pool
    backend = pool.backends[0]
    given_up, waiting = backend.down_future(), backend.down_future()
    given_up.cancel()
    await asyncio.sleep(0)
    assert len(backend._down_futures) == 1 and not waiting.done()
    pool.mark_unhealthy(backend, "the websocket closed", quarantine=False)
    assert waiting.done() and backend.is_down
    assert backend.down_future().done()  # down already: at once


async def test_a_backend_found_down_comes_back_only_once_its_return_check_passes() -> None:
    server = FakeServer(name="late", up=False)
    pool = BackendPool.from_specs(
        [BackendSpec(name="late", url="fake://late")], lambda url: FakeClient(server), health=HEALTH
    )
    checks: list[str] = []
    passing = asyncio.Event()  # (a flag: nothing waits on it)

    async def on_return(backend: Any, client: Any) -> bool:
        checks.append(backend.name)
        return passing.is_set()  # False: its stale prompts could not be cleared yet

    pool.on_return = on_return
    await pool.start()
    try:
        backend = pool.get("late")
        assert backend is not None
        await until(lambda: backend.is_down)
        server.up = True
        await until(lambda: len(checks) >= 2)  # answered, but not back: asked again
        assert backend.is_down and pool.snapshot()[0].state == "unhealthy"
        passing.set()
        await until(lambda: pool.snapshot()[0].state == "ready")
        assert not backend.is_down
    finally:
        await pool.stop()
        await server.stop()


async def test_a_backend_given_up_on_by_a_run_is_not_back_before_its_return_check_passes(
    ready_pool: BackendPool,
) -> None:
    """(A backend marked down by a run, its health still answering, came back at the next
    probe whatever the check said.)"""
    pool = ready_pool
    backend = pool.get("a")
    assert backend is not None
    checks: list[str] = []

    async def on_return(backend: Any, client: Any) -> bool:
        checks.append(backend.name)
        return False

    pool.on_return = on_return
    await until(lambda: pool.snapshot()[0].state == "ready")
    pool.mark_unhealthy(backend, "POST /prompt failed", quarantine=False)
    await until(lambda: len(checks) >= 2)
    assert backend.is_down


async def test_a_backend_whose_prompts_run_shorter_than_their_refill_holds_more(
    ready_pool: BackendPool,
) -> None:
    """core.pipeline: a backend that drains its one held prompt before comfyrun can send the
    next gets more room; one whose prompts run longer keeps one running and one held."""
    pool = ready_pool

    def fill() -> list[Any]:
        slots = []
        while (slot := pool.try_reserve()) is not None:
            slots.append(slot)
        return slots

    def run_jobs(slots: list[Any], run_s: float) -> None:
        for i, slot in enumerate(slots):
            slot.bind(f"j{id(slot)}-{i}")
            slot._reserved_at -= 0.020  # comfyrun took 20 ms to queue its prompt
            slot.submitted()
            slot.executed_prompt(run_s)
            slot.release(done=True)

    first = fill()
    assert len(first) == 2  # nothing known yet: the floor
    for _ in range(5):
        run_jobs(first, 0.004)  # 4 ms prompts, 20 ms to refill: the backend idles
        first = fill()
    assert len(first) == MAX_PIPELINE
    for _ in range(30):
        run_jobs(first, 2.0)  # a model's prompts: seconds
        first = fill()
    assert len(first) == 2
    for slot in first:
        slot.release()
