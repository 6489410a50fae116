"""A v2 cancel that comes while a run's end (its success) is being committed: a cancel answered
`canceling` is kept (the job ends canceled, its outputs not a success); one that comes after
the end is committed answers the job as it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.api import memory_settings
from tests.support.engine import work
from tests.unit.dispatch.conftest import Engine

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.service import JobService


def hold_the_end(store: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the run's SUCCEED write wait: (its write has begun, let it go on)."""
    transition = store.transition
    ending, go_on = asyncio.Event(), asyncio.Event()

    async def held(job_id: str, event: Event, **kwargs: Any) -> Any:
        if event is Event.SUCCEED and not go_on.is_set():
            ending.set()
            await go_on.wait()
        return await transition(job_id, event, **kwargs)

    store.transition = held
    return ending, go_on


async def test_a_cancel_answered_canceling_while_the_end_is_committed_ends_canceled(
    make_engine: Callable[..., Any], tmp_path: Path
) -> None:
    engine: Engine = await make_engine()
    service = JobService(engine.store, memory_settings(tmp_path))
    ending, go_on = hold_the_end(engine.store)
    job = await engine.submit(work())
    async with asyncio.timeout(10):
        await ending.wait()  # the prompt succeeded; its end's write waits
    answer = await service.cancel(job.id)
    assert answer.job.status is JobStatus.CANCELING
    go_on.set()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.CANCELED  # as promised: not succeeded
    assert (await service.cancel(job.id)).job.status is JobStatus.CANCELED


async def test_a_cancel_after_the_end_answers_the_job_as_it_ended(
    make_engine: Callable[..., Any], tmp_path: Path
) -> None:
    engine: Engine = await make_engine()
    service = JobService(engine.store, memory_settings(tmp_path))
    done = await engine.wait((await engine.submit(work())).id)
    assert done.status is JobStatus.SUCCEEDED
    assert (await service.cancel(done.id)).job.status is JobStatus.SUCCEEDED
