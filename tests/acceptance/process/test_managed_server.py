"""The server (create_app: API, pool, dispatcher) running jobs on managed ComfyUI processes.

The backends are real child processes: ComfyUI-shaped folders whose main.py runs the emulator.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import image_workflow, text_to_image_workflow
from tests.support.managed_comfy import emulator_args, make_emulator_folder

from comfyrun.api.context import AppContext
from comfyrun.backends.process import ManagedProcess, group_alive
from comfyrun.config import BackendConfig


def managed(ctx: AppContext, name: str) -> ManagedProcess:
    backend = ctx.pool.get(name)
    assert backend is not None and isinstance(backend.process, ManagedProcess)
    return backend.process


async def backends(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v2/backends")
    assert response.status_code == 200
    return {b["name"]: b for b in response.json()["backends"]}


async def submit(client: httpx.AsyncClient, workflow: dict[str, Any], **extra: Any) -> str:
    response = await client.post("/api/v2/jobs", json={"workflow": workflow, **extra})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 90) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job: dict[str, Any] = (await client.get(f"/api/v2/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            await asyncio.sleep(0.1)


def settings(tmp_path: Path, *backends_: BackendConfig, **overrides: Any) -> Any:
    return memory_settings(tmp_path / "data", backends=list(backends_), **overrides)


async def test_lazy_start_on_the_first_job_and_clean_stop(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder)
    async with asgi_app(settings(tmp_path, cfg)) as (_app, client, ctx):
        process = managed(ctx, "gpu0")
        await asyncio.sleep(0.5)  # the server is up; nothing has asked for the backend yet
        assert process.pid is None
        listed = (await backends(client))["gpu0"]
        assert listed["state"] == "stopped" and listed["managed"] is True

        job = await wait_job(client, await submit(client, image_workflow(prefix="lazy")))

        assert job["status"] == "succeeded", job
        assert [o["name"] for o in job["outputs"] if o["node_id"] == "3"]
        pid = process.pid
        assert pid is not None
        listed = (await backends(client))["gpu0"]
        assert listed["state"] in ("ready", "busy") and listed["url"] == process.url
        assert any("To see the GUI" in line for line in listed["log_tail"])
    assert process.pid is None
    assert not group_alive(pid)


@pytest.mark.slow
async def test_kill_9_mid_job_restarts_comfyui_and_the_job_completes(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, extra_args=emulator_args(step_time_s=0.1))
    async with asgi_app(settings(tmp_path, cfg)) as (_app, client, ctx):
        process = managed(ctx, "gpu0")
        job_id = await submit(client, text_to_image_workflow(steps=30), max_retries=3)
        async with asyncio.timeout(60):  # until the sampler reports progress
            while True:
                job = (await client.get(f"/api/v2/jobs/{job_id}")).json()
                if (job.get("progress") or {}).get("step"):
                    break
                await asyncio.sleep(0.05)
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)

        job = await wait_job(client, job_id)

        assert job["status"] == "succeeded", job
        assert job["outputs"], job
        assert process.pid not in (None, first) and process.restarts == 1
        assert not group_alive(first)


@pytest.mark.slow
async def test_a_wrong_path_is_a_clear_error_while_another_backend_serves(tmp_path: Path) -> None:
    good = BackendConfig(name="good", comfy_path=make_emulator_folder(tmp_path / "ComfyUI"))
    bad = BackendConfig(name="bad", comfy_path=tmp_path / "no-such-comfyui")
    async with asgi_app(settings(tmp_path, bad, good)) as (_app, client, _ctx):
        ids = [await submit(client, image_workflow(color=i)) for i in range(4)]
        jobs = [await wait_job(client, job_id) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 4, jobs
        listed = await backends(client)
        assert listed["bad"]["state"] == "error"
        assert "no-such-comfyui does not exist" in listed["bad"]["last_error"]
        assert "main.py" in listed["bad"]["last_error"]
        assert listed["good"]["state"] in ("ready", "busy")


@pytest.mark.slow
async def test_with_no_other_backend_jobs_fail_with_what_to_fix(tmp_path: Path) -> None:
    empty = tmp_path / "ComfyUI"
    empty.mkdir()
    bad = BackendConfig(name="bad", comfy_path=empty)
    async with asgi_app(settings(tmp_path, bad)) as (_app, client, _ctx):
        # with retries left too: no backend can ever take it, so it fails with what to fix
        job = await wait_job(client, await submit(client, image_workflow(), max_retries=3))
        assert job["status"] == "failed", job
        assert "has no main.py" in job["error"]["message"], job["error"]
        health = await client.get("/api/v2/health")
        assert health.status_code == 200  # the rest of the server keeps working


def png_base64(size: int = 8) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def test_inputs_and_outputs_go_through_the_folders_not_http(tmp_path: Path) -> None:
    # every upload and every /view on this ComfyUI answers 500: the job can only succeed if
    # comfyrun writes its input into the input folder and reads its output from the output folder
    faults = ("http500:/upload/image:1000", "http500:/view:1000")
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, extra_args=emulator_args(faults=faults))
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "io"}},
    }
    inputs = [{"name": "in.png", "data": png_base64(), "node": "1", "input": "image"}]
    async with asgi_app(settings(tmp_path, cfg)) as (_app, client, ctx):
        job_id = await submit(client, workflow, inputs=inputs, max_retries=0)
        job = await wait_job(client, job_id)
        assert job["status"] == "succeeded", job
        assert [o["node_id"] for o in job["outputs"]] == ["3"]
        process = managed(ctx, "gpu0")
        async with asyncio.timeout(30):  # the job is marked done before its inputs are removed
            await ctx.dispatcher.wait_idle()
        assert not (process.input_dir / "comfyrun" / job_id).exists()  # removed after the job
        # the output was read from the folder (its /view answers 500), then ComfyUI's copy
        # removed from the folder comfyrun chose (clean_backend_outputs)
        janitor = ctx.dispatcher.ctx.janitor
        assert janitor is not None
        await janitor.close()
        assert janitor.removed == 1 and not list(process.output_dir.glob("io_*.png"))


async def test_eager_start_begins_with_the_server(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, lazy=False)
    async with asgi_app(settings(tmp_path, cfg)) as (_app, _client, ctx):
        process = managed(ctx, "gpu0")
        ready = asyncio.Event()
        process.on_state_change(lambda s: ready.set() if s.value == "ready" else None)
        if process.pid is None:  # nothing asks for it: only the eager start can start it
            await asyncio.wait_for(ready.wait(), 60)
        assert process.pid is not None


@pytest.mark.slow
async def test_idle_stop_frees_the_backend_until_the_next_job(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, idle_stop_s=1.0)
    async with asgi_app(settings(tmp_path, cfg)) as (_app, client, ctx):
        process = managed(ctx, "gpu0")
        stopped = asyncio.Event()
        pids: list[int | None] = []  # the process's pid each time it became ready

        def on_state(state: Any) -> None:
            if state.value == "ready":
                pids.append(process.pid)
            elif state.value == "stopped":
                stopped.set()

        process.on_state_change(on_state)
        job = await wait_job(client, await submit(client, image_workflow()))
        assert job["status"] == "succeeded", job
        # read from the state changes: on a loaded machine the idle second may be over (and
        # the process stopped) by the time the job's answer is read
        first = pids[0]
        assert first is not None

        await asyncio.wait_for(stopped.wait(), 30)  # idle for 1 s: stopped, GPU freed
        await asyncio.sleep(3)  # and it stays stopped while nothing needs it
        assert process.pid is None and not group_alive(first)
        assert (await backends(client))["gpu0"]["state"] == "stopped"

        job = await wait_job(client, await submit(client, image_workflow(color=1)))
        assert job["status"] == "succeeded", job
        assert pids[-1] not in (None, first)  # a new process ran it
