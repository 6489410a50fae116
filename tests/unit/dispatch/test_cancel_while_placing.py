"""A cancel that comes while a job's inputs and model files are still being fetched, before
its prompt reaches ComfyUI: the fetch is stopped, the job ends canceled and its backend is free
again (it waited for a download that could last an hour, the job `canceling` all along)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.engine import FakeClient, FakeServer, until, work
from tests.unit.dispatch.conftest import FAST, HEALTH, Engine

from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.job import Job, JobStatus
from comfyrun.core.placement import BackendState
from comfyrun.core.state import Event
from comfyrun.dispatch import Dispatcher
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store


async def test_a_cancel_while_the_inputs_are_fetched_stops_the_fetch_and_frees_the_backend() -> (
    None
):
    fetching = asyncio.Event()
    stopped = asyncio.Event()
    cleaned: list[str] = []

    async def slow_place(job: Job, backend: Any, client: Any) -> Any:
        if not job.options.get("models"):
            return job.workflow, _nothing
        fetching.set()
        try:
            await asyncio.sleep(3600)  # a model URL that answers nothing
        except asyncio.CancelledError:
            stopped.set()
            raise

        async def cleanup() -> None:
            cleaned.append(job.id)

        return job.workflow, cleanup

    store = open_store("memory://")
    await store.open()
    server = FakeServer(name="a")
    pool = BackendPool.from_specs(
        [BackendSpec(name="a", url="fake://a", sees_model_cache=True)],
        lambda url: FakeClient(server),
        health=HEALTH,
    )
    await pool.start()
    dispatcher = Dispatcher(
        store,
        pool,
        open_output_storage("memory://"),
        FAST,
        worker_id="w1",
        place_inputs=slow_place,
    )
    engine = Engine(store, open_output_storage("memory://"), pool, dispatcher, {"a": server})
    try:
        assert await pool.wait_ready(5.0)
        await dispatcher.start()
        models = [{"url": "https://models.example/x", "folder": "loras", "name": "x.safetensors"}]
        job = await engine.submit(work(), options={"models": models})
        async with asyncio.timeout(5):
            await fetching.wait()
        await store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
        done = await engine.wait(job.id, timeout=5)
        assert done.status is JobStatus.CANCELED
        assert stopped.is_set()
        assert server.ran == []  # never sent to ComfyUI
        backend = pool.get("a")
        assert backend is not None
        await until(lambda: backend.state is BackendState.READY and not backend.inflight)
        other = await engine.wait((await engine.submit(work())).id, timeout=5)
        assert other.status is JobStatus.SUCCEEDED
    finally:
        await dispatcher.stop()
        await pool.stop()
        await server.stop()
        await store.close()


async def _nothing() -> None:
    return None
