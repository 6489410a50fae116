"""A placement note being written when its job ends, or when its prompt starts, is let finish,
not cancelled mid-way (on PostgreSQL a cancelled statement costs a connection of its own to
cancel it, and the pooled connection a reset): the job's final transition comes after it, and
the start's note is written after the held one (which would otherwise overwrite it); a note
not yet due is dropped."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.emulator import text_to_image_workflow

from comfyrun.core.job import Job, JobStatus

from .conftest import SETTINGS, Engine

Make = Callable[..., Awaitable[Engine]]


async def run_with_slow_placements(
    make_engine: Make, note_after_s: float
) -> tuple[list[tuple[str, float | None]], list[float], list[float], Job]:
    """A job whose placement writes each take 0.4 s (longer than its run): how each write
    ended (with the start it wrote), when each ended, when each transition began, the job."""
    settings = dataclasses.replace(SETTINGS, placement_note_after_s=note_after_s)
    engine = await make_engine(("a",), settings=settings, step_time_s=0.05)
    store = engine.store
    real = store.record_placement
    writes: list[tuple[str, float | None]] = []
    ended_at: list[float] = []

    async def slow_placement(*args: Any, **kwargs: Any) -> bool:
        try:
            await asyncio.sleep(0.4)  # a write that takes longer than the job's run
            held = await real(*args, **kwargs)
        except asyncio.CancelledError:
            writes.append(("cancelled", kwargs["execution_started_at"]))
            raise
        writes.append(("written", kwargs["execution_started_at"]))
        ended_at.append(asyncio.get_running_loop().time())
        return held

    real_transition = store.transition
    transitions: list[float] = []

    async def transition(*args: Any, **kwargs: Any) -> Any:
        transitions.append(asyncio.get_running_loop().time())
        return await real_transition(*args, **kwargs)

    store.record_placement = slow_placement  # type: ignore[method-assign]
    store.transition = transition  # type: ignore[method-assign]
    job = await engine.submit(text_to_image_workflow(seed=1, steps=2))
    done = await engine.wait(job.id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED
    return writes, ended_at, transitions, done


async def test_a_placement_write_under_way_finishes_before_the_job_ends(make_engine: Make) -> None:
    writes, ended_at, transitions, done = await run_with_slow_placements(make_engine, 0.01)
    # the start's note, and the held one before it if the prompt took over 10 ms to start
    assert [how for how, _ in writes] in (["written"], ["written", "written"])
    assert writes[-1][1] is not None
    assert transitions and ended_at[-1] <= transitions[-1]  # the end came after the writes
    assert done.backend == "a" and done.execution_started_at is not None


async def test_a_start_comes_while_the_held_note_is_written(make_engine: Make) -> None:
    """A note due at once: the held one is being written when the prompt starts. It is let
    finish, and the start's is written after it, not beside it: the start stays."""
    writes, ended_at, transitions, done = await run_with_slow_placements(make_engine, 0.0)
    assert [how for how, _ in writes] == ["written", "written"]
    assert writes[0][1] is None and writes[1][1] is not None  # held, then started
    assert ended_at[0] + 0.35 <= ended_at[1]  # one after the other, not side by side
    assert ended_at[-1] <= transitions[-1]
    assert done.execution_started_at == writes[1][1]
