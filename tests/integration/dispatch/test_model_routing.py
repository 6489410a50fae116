"""Model-aware routing on emulated backends that take time to load a checkpoint: a job goes to
the backend that holds its checkpoint, ahead of queued jobs that backend would have to load
another one for, and no job is overtaken more than `model_routing_max_overtake` times."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from tests.support.emulator import text_to_image_workflow

from comfyrun.core.job import Job, JobStatus

from .conftest import SETTINGS, Engine

Make = Callable[..., Awaitable[Engine]]

CKPTS = ["a.safetensors", "b.safetensors", "c.safetensors"]
EMULATOR = {"models": {"checkpoints": CKPTS}, "load_s_per_file": 0.2, "step_time_s": 0.01}


async def warm(engine: Engine) -> dict[str, str]:
    """Run one job of checkpoint a and one of b (on different backends: both are idle);
    returns checkpoint -> the backend that holds it now."""
    first = [
        await engine.submit(text_to_image_workflow(seed=i, ckpt_name=c))
        for i, c in enumerate(CKPTS[:2])
    ]
    done = [await engine.wait(j.id) for j in first]
    assert all(j.status is JobStatus.SUCCEEDED for j in done)
    holder = {c: str(j.backend) for c, j in zip(CKPTS[:2], done, strict=True)}
    assert holder["a.safetensors"] != holder["b.safetensors"]
    return holder


async def queue_then_run(engine: Engine, ckpts: list[str]) -> list[Job]:
    """Queue one job per checkpoint while the dispatcher is stopped, then start it and wait."""
    await engine.dispatcher.stop()
    queued = [
        await engine.submit(text_to_image_workflow(seed=10 + i, ckpt_name=c))
        for i, c in enumerate(ckpts)
    ]
    await engine.dispatcher.start()
    done = [await engine.wait(j.id) for j in queued]
    assert all(j.status is JobStatus.SUCCEEDED for j in done)
    return done


async def test_a_job_goes_to_the_backend_holding_its_checkpoint_ahead_of_the_queue(
    make_engine: Make,
) -> None:
    engine = await make_engine(("x", "y"), **EMULATOR)
    holder = await warm(engine)
    assert set(engine.dispatcher.router.held(holder["a.safetensors"])) == {
        "checkpoints/a.safetensors"
    }
    b1, b2, b3, a = await queue_then_run(engine, ["b.safetensors"] * 3 + ["a.safetensors"])
    # the job of checkpoint a ran where a was loaded, and was claimed before b2 and b3
    # (queued ahead of it: the backend holding b takes those)
    assert a.backend == holder["a.safetensors"]
    assert b1.backend == holder["b.safetensors"]
    assert a.started_at is not None and b2.started_at is not None and b3.started_at is not None
    assert a.started_at < b2.started_at and a.started_at < b3.started_at


async def test_without_model_routing_the_queue_order_holds(make_engine: Make) -> None:
    settings = dataclasses.replace(SETTINGS, model_routing=False)
    engine = await make_engine(("x", "y"), settings=settings, **EMULATOR)
    await warm(engine)
    jobs = await queue_then_run(engine, ["b.safetensors"] * 3 + ["a.safetensors"])
    claimed = sorted(jobs, key=lambda j: j.started_at or 0.0)
    assert [j.id for j in claimed] == [j.id for j in jobs]


async def test_a_job_no_backend_holds_is_overtaken_at_most_max_overtake_times(
    make_engine: Make,
) -> None:
    settings = dataclasses.replace(SETTINGS, model_routing_max_overtake=2)
    engine = await make_engine(("x", "y"), settings=settings, **EMULATOR)
    holder = await warm(engine)
    ckpts = ["c.safetensors"] + ["a.safetensors", "b.safetensors"] * 3
    jobs = await queue_then_run(engine, ckpts)
    lonely = jobs[0]
    assert lonely.started_at is not None
    overtook = [
        j for j in jobs[1:] if j.started_at is not None and j.started_at < lonely.started_at
    ]
    assert 0 < len(overtook) <= 2  # the others went first (their checkpoints were loaded)
    # and each of those ran where its checkpoint was loaded
    for job in overtook:
        ckpt = job.workflow["1"]["inputs"]["ckpt_name"]
        assert job.backend == holder[ckpt]
