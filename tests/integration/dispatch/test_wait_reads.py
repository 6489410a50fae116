"""`serve`: a `?wait` on a job that waits in the queue reads it from the store once, then waits
for the store to say it may have ended or for this process's run to take it up, and has the
end from that run: not a read of the job's log at each write (its claim, progress, outputs)."""

from __future__ import annotations

import asyncio
import collections
import contextvars
from pathlib import Path
from typing import Any

import httpx
from tests.support.api import memory_settings
from tests.support.emulator import running_emulator, text_to_image_workflow

from comfyrun.api.app import create_app
from comfyrun.config import BackendConfig
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.sqlite import SQLiteStore

#: Set in the task of the request that waits: the reads counted are that request's.
WAITING = contextvars.ContextVar("WAITING", default=False)


async def submit(client: httpx.AsyncClient, steps: int, wait: float | None = None) -> Any:
    params = {"wait": wait} if wait else {}
    r = await client.post(
        "/api/v2/jobs", params=params, json={"workflow": text_to_image_workflow(steps=steps)}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_wait_on_a_queued_job_reads_it_once_and_hears_its_end_from_the_run(
    tmp_path: Path,
) -> None:
    async with running_emulator(tmp_path / "emu", step_time_s=0.05) as emu:
        backends = [BackendConfig(name="gpu0", url=emu.url)]
        cfg = memory_settings(tmp_path, backends=backends, db_url=f"sqlite:///{tmp_path}/q.db")
        app = create_app(cfg, storage=MemoryOutputStorage())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                async with asyncio.timeout(30):
                    while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                store = app.state.ctx.store
                assert isinstance(store, SQLiteStore)
                reads: collections.Counter[str] = collections.Counter()
                looked = asyncio.Event()
                get, events_since = store.get, store.events_since

                async def counted_get(job_id: str) -> Any:
                    if WAITING.get():
                        reads[job_id] += 1
                        looked.set()
                    return await get(job_id)

                async def counted_events(job_id: str, after_id: int = 0) -> Any:
                    if WAITING.get():
                        reads[job_id] += 1
                        looked.set()
                    return await events_since(job_id, after_id)

                store.get = counted_get  # type: ignore[method-assign]
                store.events_since = counted_events  # type: ignore[method-assign]

                # the backend's room (a prompt running, one held behind it): ~0.5 s each
                ahead = [(await submit(client, steps=10))["id"] for _ in range(2)]

                async def waiting() -> Any:
                    WAITING.set(True)  # (the request's tasks inherit it; the runs do not)
                    return await submit(client, steps=3, wait=30)

                waited = asyncio.create_task(waiting())
                await asyncio.wait_for(looked.wait(), 30)  # the waited job's first look
                second = next(iter(reads))
                assert second not in ahead
                job = await waited
                assert job["id"] == second and job["status"] == "succeeded", job
                assert len(job["outputs"]) == 1
                # its claim, placement, progress and output woke no read of the wait; its
                # end came from the run that took it up
                assert reads == {second: 1}, reads
