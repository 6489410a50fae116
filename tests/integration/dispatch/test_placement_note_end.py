"""A placement note being written when its job ends is let finish before the job's final
transition, not cancelled mid-way (on PostgreSQL a cancelled statement costs a connection of
its own to cancel it, and the pooled connection a reset); one not yet due is dropped."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.emulator import text_to_image_workflow

from comfyrun.core.job import JobStatus

from .conftest import SETTINGS, Engine

Make = Callable[..., Awaitable[Engine]]


async def test_a_placement_write_under_way_finishes_before_the_job_ends(make_engine: Make) -> None:
    settings = dataclasses.replace(SETTINGS, placement_note_after_s=0.01)
    engine = await make_engine(("a",), settings=settings, step_time_s=0.05)
    store = engine.store
    real = store.record_placement
    writes: list[str] = []  # how each placement write ended
    ended_at: list[float] = []

    async def slow_placement(*args: Any, **kwargs: Any) -> bool:
        try:
            await asyncio.sleep(0.4)  # a write that takes longer than the job's run
            held = await real(*args, **kwargs)
        except asyncio.CancelledError:
            writes.append("cancelled")
            raise
        writes.append("written")
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
    assert writes == ["written"]
    assert transitions and ended_at[0] <= transitions[-1]  # the end came after the write
    assert done.backend == "a" and done.execution_started_at is not None
