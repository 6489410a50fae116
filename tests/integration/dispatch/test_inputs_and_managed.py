"""Inputs placed on the backend (uploaded to a remote one, written into a managed one's input
folder), and a managed backend started lazily by its first job."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.integration.dispatch.conftest import HEALTH, SETTINGS

from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.backends.process import ManagedSpec
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator.folder import make_comfy_folder
from comfyrun.core.job import TERMINAL, Job, JobStatus, NewJob
from comfyrun.core.placement import BackendState
from comfyrun.dispatch import Dispatcher
from comfyrun.outputs import open_output_storage, read_all
from comfyrun.store.base import JobStore
from comfyrun.store.factory import open_store

Make = Any


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def load_invert_save() -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "in"}},
    }


def inverted(data: bytes) -> tuple[int, int, int]:
    pixel = Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def close_to(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal up to the rounding of ComfyUI's float images."""
    return all(abs(x - y) <= 1 for x, y in zip(a, b, strict=True))


async def wait_terminal(store: JobStore, job_id: str, *, timeout: float) -> Job | None:
    after = 0
    async with asyncio.timeout(timeout):
        while (job := await store.get(job_id)) is not None and job.status not in TERMINAL:
            events = await store.wait_for_event(job_id, after, 1.0)
            after = events[-1].id if events else after
    return job


@dataclass
class Managed:
    store: JobStore
    storage: Any
    pool: BackendPool
    dispatcher: Dispatcher


@contextlib.asynccontextmanager
async def managed_worker(folder: Path, tmp_path: Path, **spec: Any) -> AsyncIterator[Managed]:
    """A dispatcher over one managed (emulated) ComfyUI in `folder`, its pool started."""
    managed = ManagedSpec(
        name="local",
        log_dir=tmp_path / "logs",
        comfy_path=folder,
        ready_timeout_s=60.0,
        ready_interval_s=0.1,
        restart_backoff_s=0.1,
        stop_grace_s=5.0,
        health_interval_s=None,
        **spec,
    )
    store = open_store("memory://")
    await store.open()
    storage = open_output_storage(f"file://{tmp_path / 'outputs'}")
    pool = BackendPool.from_specs(
        [BackendSpec(name="local", managed=managed)], ComfyClient, health=HEALTH
    )
    dispatcher = Dispatcher(store, pool, storage, SETTINGS, worker_id="managed-worker")
    await pool.start()
    try:
        yield Managed(store, storage, pool, dispatcher)
    finally:
        await dispatcher.stop()
        await pool.stop()
        await store.close()


async def test_an_input_is_uploaded_to_a_remote_backend(make_engine: Make) -> None:
    engine = await make_engine()
    data = base64.b64encode(png((10, 20, 30))).decode()
    job = await engine.submit(load_invert_save(), inputs=({"name": "photo.png", "data": data},))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    key = done.outputs[0].storage_key
    assert key is not None
    assert close_to(inverted(await read_all(engine.storage, key)), (245, 235, 225))
    emulator: Any = engine.emulators["a"]
    uploaded = Path(emulator.config.input_dir, "comfyrun", job.id, "photo.png")
    assert await asyncio.to_thread(uploaded.is_file)


@pytest.mark.slow
async def test_a_managed_backend_starts_on_its_first_job_and_works_from_its_folders(
    tmp_path: Path,
) -> None:
    folder = await asyncio.to_thread(make_comfy_folder, tmp_path / "ComfyUI")
    async with managed_worker(folder, tmp_path) as worker:
        store, storage, pool, dispatcher = (
            worker.store,
            worker.storage,
            worker.pool,
            worker.dispatcher,
        )
        assert [(b.state, b.managed) for b in pool.snapshot()] == [("stopped", True)]
        await dispatcher.start()
        data = base64.b64encode(png((100, 0, 200))).decode()
        job, _ = await store.enqueue(
            NewJob(workflow=load_invert_save(), inputs=({"name": "photo.png", "data": data},))
        )
        done = await wait_terminal(store, job.id, timeout=90)
        assert done is not None and done.status is JobStatus.SUCCEEDED, done and done.error
        key = done.outputs[0].storage_key
        assert key is not None
        assert close_to(inverted(await read_all(storage, key)), (155, 255, 55))
        # the job's input folder is gone once the job is done
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
        assert not await asyncio.to_thread((folder / "input" / "comfyrun" / job.id).exists)
        info = pool.snapshot()[0]
        assert info.state in ("ready", "busy") and info.url and info.jobs_done == 1
        # the folders are the ComfyUI checkout's own (no files_dir): its copies are left,
        # and comfyrun's is a copy, not a second name of the same file
        saved = folder / "output" / done.outputs[0].name
        assert await asyncio.to_thread(saved.is_file)
        stored = await asyncio.to_thread((tmp_path / "outputs" / key).stat)
        assert stored.st_nlink == 1 and stored.st_ino != saved.stat().st_ino
    assert pool.snapshot()[0].state == "stopped"


async def test_comfyuis_copies_in_the_folders_comfyrun_chose_are_removed(
    tmp_path: Path,
) -> None:
    """A managed backend whose folders comfyrun chose (files_dir): once a job's end is
    committed with its outputs, ComfyUI's copies are removed (its saves stay cheap, the disk
    holds each output once); until then comfyrun's is a second name of ComfyUI's file (linked,
    not copied). An identical prompt, which ComfyUI answers from its cache naming a removed
    file, runs anew and succeeds."""
    folder = await asyncio.to_thread(make_comfy_folder, tmp_path / "ComfyUI")
    files = tmp_path / "files"
    async with managed_worker(folder, tmp_path, files_dir=files) as worker:
        store, storage, dispatcher = worker.store, worker.storage, worker.dispatcher
        janitor = dispatcher.ctx.janitor
        assert janitor is not None
        janitor._batch_s = 60.0  # removes only when closed, below
        await dispatcher.start()
        graph = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x2040},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "c"},
            },
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
        for _ in range(2):
            job, _ = await store.enqueue(NewJob(workflow=graph))
            done = await wait_terminal(store, job.id, timeout=90)
            assert done is not None and done.status is JobStatus.SUCCEEDED, done and done.error
            assert done.attempts == 1
            key = done.outputs[0].storage_key
            assert key is not None and await read_all(storage, key)
            stored = tmp_path / "outputs" / key
            name = done.outputs[0].name
            (saved,) = await asyncio.to_thread(lambda: list(files.rglob(name)))  # noqa: B023
            assert (await asyncio.to_thread(stored.stat)).st_ino == saved.stat().st_ino
            assert stored.stat().st_nlink == 2  # linked, not copied
            await janitor.close()  # what it was given (at the job's end) is removed
            assert not await asyncio.to_thread(lambda: any(files.rglob("*.png")))
            assert stored.stat().st_nlink == 1 and stored.read_bytes()[:4] == b"\x89PNG"
            janitor._closing.clear()  # (open again for the next job)
        info = worker.pool.snapshot()[0]
        assert info.state in ("ready", "busy") and info.url
        async with httpx.AsyncClient(timeout=10) as http:
            history = (await http.get(f"{info.url}/history")).json()
        runs = [e for e in history.values() if e["prompt"][3].get("comfyrun_job_id") == job.id]
        assert len(runs) == 2  # the second job: answered from the cache, then run anew


async def test_a_missing_comfyui_fails_jobs_with_a_clear_message(tmp_path: Path) -> None:
    spec = ManagedSpec(name="broken", log_dir=tmp_path / "logs", comfy_path=tmp_path / "nowhere")
    store = open_store("memory://")
    await store.open()
    pool = BackendPool.from_specs([BackendSpec(name="broken", managed=spec)], ComfyClient)
    storage = open_output_storage(f"file://{tmp_path / 'outputs'}")
    dispatcher = Dispatcher(store, pool, storage, SETTINGS, worker_id="w")
    await pool.start()
    await dispatcher.start()
    try:
        jobs = [(await store.enqueue(NewJob(workflow=load_invert_save())))[0] for _ in range(3)]
        for job in jobs:
            done = await wait_terminal(store, job.id, timeout=30)
            assert done is not None and done.status is JobStatus.FAILED
            assert done.error is not None and done.error.code == "backend_unavailable"
            assert "nowhere" in done.error.message, done.error.message
        assert pool.snapshot()[0].state == "error"
    finally:
        await dispatcher.stop()
        await pool.stop()
        await store.close()


async def test_an_input_comfyui_refuses_fails_its_job_not_the_backend(make_engine: Make) -> None:
    """ComfyUI answers an upload over its limit with 413: the job's input is at fault, so the
    job fails with what ComfyUI said (not retried), and the backend stays in service."""
    engine = await make_engine(max_upload_size=4096)
    big = base64.b64encode(os.urandom(8192)).decode()
    job = await engine.submit(
        load_invert_save(), inputs=({"name": "photo.png", "data": big},), max_retries=2
    )
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error.code == "input_refused"
    assert "413" in done.error.message
    [backend] = engine.pool.views()
    assert backend.state is BackendState.READY
    small = base64.b64encode(png((1, 2, 3))).decode()
    ok = await engine.wait(
        (await engine.submit(load_invert_save(), inputs=({"name": "photo.png", "data": small},))).id
    )
    assert ok.status is JobStatus.SUCCEEDED and ok.attempts == 1
