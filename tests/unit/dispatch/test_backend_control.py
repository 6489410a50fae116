"""An admin's operations on one backend (backends.control) with the dispatcher running: drain,
resume, stop, start, restart; fake ComfyUI servers, and fake managed processes that stop and
start them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.support.engine import until, work
from tests.unit.dispatch.conftest import Engine

from comfyrun.backends import control
from comfyrun.backends.pool import Backend
from comfyrun.core.job import JobStatus
from comfyrun.errors import Conflict, NotFound

Make = Any


def running_on(engine: Engine, job_id: str) -> Backend:
    return next(b for b in engine.pool.backends if job_id in b.jobs)


async def test_a_drained_backend_finishes_its_job_and_the_next_jobs_go_to_the_other(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"))
    long = await engine.submit(work(1.0, steps=10))
    await engine.wait_for(long.id, lambda j: j.status is JobStatus.RUNNING)
    await until(lambda: any(long.id in b.jobs for b in engine.pool.backends))
    drained = running_on(engine, long.id)
    other = "b" if drained.name == "a" else "a"
    control.drain(engine.pool, drained)
    info = drained.info()
    assert info.state == "draining" and info.draining and info.inflight == 1
    later = [await engine.submit(work(0.05)) for _ in range(3)]
    for job in later:
        done = await engine.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.backend == other
    finished = await engine.wait(long.id)
    assert finished.status is JobStatus.SUCCEEDED and finished.backend == drained.name
    assert finished.attempts == 1 and finished.outputs
    assert [r.job_id for r in engine.servers[drained.name].ran] == [long.id]
    assert drained.info().state == "draining" and drained.info().inflight == 0


async def test_a_job_held_behind_the_running_one_on_a_drained_backend_moves_to_another(
    make_engine: Make,
) -> None:
    """The second job waits in the drained backend's ComfyUI queue (both backends were busy):
    it is taken back at once and runs on the other backend as soon as that has room, not after
    the drained backend's job."""
    engine = await make_engine(("a", "b"))
    long = [await engine.submit(work(2.0, steps=20)) for _ in range(2)]
    for job in long:
        await engine.wait_for(job.id, lambda j: j.status is JobStatus.RUNNING)
    held = await engine.submit(work(0.05))
    await until(lambda: any(held.id in b.jobs for b in engine.pool.backends))
    drained = running_on(engine, held.id)
    control.drain(engine.pool, drained)
    done = await engine.wait(held.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend != drained.name
    assert held.id not in [r.job_id for r in engine.servers[drained.name].ran]
    assert done.attempts == 1  # taken back unstarted: not an attempt spent
    for job in long:
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED


async def test_with_every_backend_drained_jobs_wait_queued_and_run_once_resumed(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"))
    for backend in engine.pool.backends:
        control.drain(engine.pool, backend)
    assert not engine.pool.hopeless
    job = await engine.submit(work(0.01))
    await asyncio.sleep(0.5)  # several passes of the dispatcher: none places it, none fails it
    waiting = await engine.store.get(job.id)
    assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.attempts == 0
    control.resume(engine.pool, engine.pool.backends[1])
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend == engine.pool.backends[1].name
    assert not engine.pool.backends[1].info().draining


async def test_unknown_backends_and_operations_that_make_no_sense_are_refused(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a",))
    with pytest.raises(NotFound):
        control.backend_of(engine.pool, "nope")
    backend = control.backend_of(engine.pool, "a")
    with pytest.raises(Conflict, match="not managed"):
        control.start(engine.pool, backend)
    control.stop(engine.pool, backend)  # a URL backend has no process: it is drained
    assert backend.info().draining and not backend.info().kept_stopped
    job = await engine.submit(work(2.0, steps=20))
    control.resume(engine.pool, backend)
    await until(lambda: job.id in backend.jobs)
    with pytest.raises(Conflict, match="not managed"):  # its prompt would go on in ComfyUI
        control.restart(engine.pool, backend, force=True)


async def test_a_room_reserved_for_a_claim_does_not_refuse_a_forced_restart(
    make_engine: Make,
) -> None:
    """A forced restart of a backend comfyrun does not manage is refused for its jobs (their
    prompts would go on in its ComfyUI), not for a room a claim under way reserved there (the
    dispatcher's, a moment after a resume): no prompt of it is in ComfyUI."""
    engine = await make_engine(("a",))
    backend = control.backend_of(engine.pool, "a")
    slot = engine.pool.try_reserve(on="a")
    assert slot is not None and backend.inflight == 1 and not backend.jobs
    try:
        control.restart(engine.pool, backend, force=True)
        assert backend.restart_pending
    finally:
        slot.release()


async def test_a_stopped_managed_backend_finishes_its_job_then_stays_stopped_until_started(
    managed_engine: Make,
) -> None:
    engine, process = await managed_engine()
    pool = engine.pool
    backend = control.backend_of(pool, "m")
    job = await engine.submit(work(0.5, steps=5))
    await until(lambda: any(r.job_id == job.id for r in engine.servers["m"].ran))
    control.stop(pool, backend)
    assert backend.info().state == "draining" and backend.info().kept_stopped
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1 and done.outputs
    await until(lambda: process.state == "stopped")
    assert process.stops == 1
    info = backend.info()
    assert info.state == "stopped" and info.kept_stopped and info.draining
    # the next job does not start it (no lazy start): it waits in the queue
    waiting = await engine.submit(work(0.01))
    await asyncio.sleep(0.5)
    assert process.starts == 1 and process.state == "stopped"
    queued = await engine.store.get(waiting.id)
    assert queued is not None and queued.status is JobStatus.QUEUED and queued.attempts == 0
    statuses = [e.data.get("status") for e in await engine.store.events_since(waiting.id)]
    assert "running" not in statuses, statuses  # never claimed for it
    assert not pool.hopeless and backend.view().lazy_start is False
    control.start(pool, backend)
    done = await engine.wait(waiting.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend == "m"
    assert process.starts == 2 and not backend.info().kept_stopped


async def test_resume_undoes_a_stop_and_the_next_job_starts_the_backend_lazily(
    managed_engine: Make,
) -> None:
    engine, process = await managed_engine()
    backend = control.backend_of(engine.pool, "m")
    control.stop(engine.pool, backend, force=True)
    await until(lambda: backend.info().state == "stopped")
    job = await engine.submit(work(0.01))
    await asyncio.sleep(0.3)
    assert process.starts == 0
    statuses = [e.data.get("status") for e in await engine.store.events_since(job.id)]
    assert "running" not in statuses, statuses
    control.resume(engine.pool, backend)
    assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
    assert process.starts == 1


async def test_a_forced_restart_puts_the_running_job_back_and_it_succeeds_once_after_it(
    managed_engine: Make,
) -> None:
    engine, process = await managed_engine()
    backend = control.backend_of(engine.pool, "m")
    server = engine.servers["m"]
    job = await engine.submit(work(1.0, steps=10))
    await until(lambda: any(r.job_id == job.id for r in server.ran))
    control.restart(engine.pool, backend, force=True)
    assert backend.info().draining  # no new job while it restarts
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.outputs, done.error
    assert done.attempts == 1  # the cut attempt was not the job's failure: not counted
    assert process.restarts == 1 and process.stops == 1 and process.starts == 2
    ran = [r for r in server.ran if r.job_id == job.id]
    assert [r.status for r in ran] == ["running", "success"]  # cut short, then run once
    statuses = [e.data.get("status") for e in await engine.store.events_since(job.id)]
    assert statuses.count("succeeded") == 1, statuses
    await until(lambda: not backend.info().draining)


async def test_a_forced_stop_sends_the_running_job_to_another_backend(
    managed_engine: Make,
) -> None:
    engine, process = await managed_engine("b")
    backend = control.backend_of(engine.pool, "m")
    control.drain(engine.pool, engine.pool.get("b"))  # the job goes to "m" first
    job = await engine.submit(work(1.0, steps=10))
    await until(lambda: any(r.job_id == job.id for r in engine.servers["m"].ran))
    control.resume(engine.pool, engine.pool.get("b"))
    control.stop(engine.pool, backend, force=True)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend == "b", done.error
    assert done.attempts == 1
    assert process.state == "stopped" and process.starts == 1
    assert [r.job_id for r in engine.servers["b"].ran] == [job.id]


async def test_a_restart_waits_for_the_running_job(managed_engine: Make) -> None:
    engine, process = await managed_engine()
    backend = control.backend_of(engine.pool, "m")
    job = await engine.submit(work(0.5, steps=5))
    await until(lambda: any(r.job_id == job.id for r in engine.servers["m"].ran))
    control.restart(engine.pool, backend)
    with pytest.raises(Conflict, match="being restarted"):
        control.stop(engine.pool, backend)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    await until(lambda: process.restarts == 1 and not backend.info().draining)
    assert [r.status for r in engine.servers["m"].ran] == ["success"]


async def test_a_job_claimed_for_a_backend_drained_meanwhile_goes_back_to_the_queue(
    make_engine: Make,
) -> None:
    """The room was reserved and the job claimed for it; the backend was drained before the
    job started there (no other has room): the job waits in the queue, not on that backend."""
    engine = await make_engine(("a",), start=False)
    job = await engine.submit(work(0.01))
    slot = engine.pool.try_reserve()
    assert slot is not None
    claimed = await engine.store.claim(engine.dispatcher.worker_id, 30.0)
    assert claimed is not None and claimed.id == job.id
    backend = control.backend_of(engine.pool, "a")
    control.drain(engine.pool, backend)
    await engine.dispatcher.start_claimed(claimed, slot, "p1")
    back = await engine.store.get(job.id)
    assert back is not None and back.status is JobStatus.QUEUED and back.attempts == 0
    assert backend.inflight == 0 and not engine.servers["a"].ran
    control.resume(engine.pool, backend)
    await engine.dispatcher.start()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
