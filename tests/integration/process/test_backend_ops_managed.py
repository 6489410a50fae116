"""An admin's operations on a managed backend, end to end: `serve` with the emulator run as a
managed ComfyUI (a child process), operated over POST /api/v2/backends/{name}/...: a forced
restart kills the process under a running job, which runs again once, after it; a stop really
stops the process, and no job starts it again until `start`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import text_to_image_workflow
from tests.support.fake_comfy import pid_running

from comfyrun.backends.process import group_alive

NAME = "emulator-1"


async def backend(client: httpx.AsyncClient) -> dict[str, Any]:
    listed = (await client.get("/api/v2/backends")).json()["backends"]
    found: dict[str, Any] = next(b for b in listed if b["name"] == NAME)
    return found


async def until_backend(client: httpx.AsyncClient, state: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):  # a bounded poll of what the API shows
        while (await backend(client))["state"] != state:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def job_when(client: httpx.AsyncClient, job_id: str, check: Any) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while not check(job := (await client.get(f"/api/v2/jobs/{job_id}")).json()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    result: dict[str, Any] = job
    return result


@pytest.mark.slow
async def test_restart_force_stop_and_start_of_a_managed_backend(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path, emulators=1, emulator_mode="process", emulator_step_time_s=0.05
    )
    async with asgi_app(settings) as (_, client, ctx):
        process = ctx.pool.get(NAME).process
        await until_backend(client, "ready")
        first_pid = process.pid
        assert first_pid is not None

        # a forced restart under a running job: the job runs again after it, once
        job = (
            await client.post("/api/v2/jobs", json={"workflow": text_to_image_workflow(steps=60)})
        ).json()
        await job_when(client, job["id"], lambda j: j["progress"] is not None)
        r = await client.post(f"/api/v2/backends/{NAME}/restart", params={"force": "true"})
        assert r.status_code == 200 and r.json()["draining"], r.text
        done = await job_when(client, job["id"], lambda j: j["completed_at"] is not None)
        assert done["status"] == "succeeded" and done["outputs"], done
        assert done["attempts"] == 1 and done["backend"] == NAME
        events = await ctx.store.events_since(job["id"])
        statuses = [e.data.get("status") for e in events if e.kind == "status"]
        assert statuses.count("queued") == 2 and statuses.count("succeeded") == 1, statuses
        assert process.pid not in (None, first_pid) and not group_alive(first_pid)
        await until_backend(client, "ready")

        # a stop stops the process, and a job waits for a `start` rather than start it
        second_pid = process.pid
        r = await client.post(f"/api/v2/backends/{NAME}/stop")
        assert r.status_code == 200 and r.json()["kept_stopped"], r.text
        await until_backend(client, "stopped")
        assert process.pid is None and not pid_running(second_pid)
        waiting = (
            await client.post("/api/v2/jobs", json={"workflow": text_to_image_workflow(steps=1)})
        ).json()
        await asyncio.sleep(1.5)
        assert (await client.get(f"/api/v2/jobs/{waiting['id']}")).json()["status"] == "queued"
        assert (await backend(client))["state"] == "stopped" and process.pid is None
        ready = (await client.get("/ready")).json()
        assert ready["backends_ready"] == 0 and not ready["ready"]
        r = await client.post(f"/api/v2/backends/{NAME}/start")
        assert r.status_code == 200 and not r.json()["kept_stopped"], r.text
        done = await job_when(client, waiting["id"], lambda j: j["completed_at"] is not None)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
