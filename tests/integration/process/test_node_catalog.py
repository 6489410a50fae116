"""ComfyUI's node definitions from a fleet of lazy managed backends: a cold fleet answers
/object_info (waking its backends), a restarted server answers from the store before any backend
is up, and a backend that restarts with other model files is described again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.emulator import text_to_image_workflow
from tests.support.managed_comfy import emulator_args, make_emulator_folder

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.backends.process import ManagedProcess
from comfyrun.config import BackendConfig, Settings
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.factory import open_store

LOADER = "CheckpointLoaderSimple"


def fleet_settings(tmp_path: Path, folders: dict[str, Path]) -> Settings:
    backends = [
        BackendConfig(name=name, comfy_path=folder, extra_args=emulator_args(), ready_timeout_s=90)
        for name, folder in folders.items()
    ]
    return Settings(
        data_dir=tmp_path / "data",
        db_url=f"sqlite:///{tmp_path / 'comfyrun.db'}",
        api_keys=[],
        backends=backends,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext]]:
    app = create_app(settings, storage=MemoryOutputStorage())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=180
        ) as client:
            yield client, app.state.ctx


def process_of(ctx: AppContext, name: str) -> ManagedProcess:
    backend = ctx.pool.get(name)
    assert backend is not None and isinstance(backend.process, ManagedProcess)
    return backend.process


def with_checkpoint(folder: Path, name: str) -> Path:
    (folder / "models" / "checkpoints" / name).write_bytes(b"\0" * 16)
    return folder


def checkpoints(info: dict[str, Any]) -> list[str]:
    choices: list[str] = info[LOADER]["input"]["required"]["ckpt_name"][0]
    return choices


async def test_a_cold_lazy_fleet_answers_then_a_restart_answers_from_the_store(
    tmp_path: Path,
) -> None:
    folders = {
        "gpu-a": with_checkpoint(make_emulator_folder(tmp_path / "A"), "only_on_a.safetensors"),
        "gpu-b": with_checkpoint(make_emulator_folder(tmp_path / "B"), "only_on_b.safetensors"),
    }
    settings = fleet_settings(tmp_path, folders)
    async with running(settings) as (client, ctx):
        assert all(process_of(ctx, n).pid is None for n in folders)  # nothing started yet

        answer = await client.get("/object_info")  # wakes the fleet and waits for it

        assert answer.status_code == 200, answer.text
        info = answer.json()
        assert {"only_on_a.safetensors", "only_on_b.safetensors"} <= set(checkpoints(info))
        assert all(process_of(ctx, n).pid is not None for n in folders)
        one = (await client.get(f"/api/object_info/{LOADER}")).json()
        assert list(one) == [LOADER] and one[LOADER] == info[LOADER]
        files = (await client.get("/models/checkpoints")).json()
        assert {"only_on_a.safetensors", "only_on_b.safetensors"} <= set(files)
        assert "checkpoints" in (await client.get("/api/models")).json()
        assert (await client.get("/models/no_such_folder")).status_code == 404
        assert isinstance((await client.get("/embeddings")).json(), list)
        assert (await client.get("/features")).json()["supports_preview_metadata"] is True

    # the same database, the same lazy backends: answered at once, nothing is started
    async with running(settings) as (client, ctx):
        again = await client.get("/api/object_info")
        assert again.status_code == 200
        assert again.json() == info
        assert (await client.get("/models/checkpoints")).json() == files
        # submissions are checked against the stored union too, still without starting anything
        bad = await client.post(
            "/prompt", json={"prompt": text_to_image_workflow(ckpt_name="nowhere.safetensors")}
        )
        assert bad.status_code == 400, bad.text
        assert "nowhere.safetensors" in bad.text
        assert all(process_of(ctx, n).pid is None for n in folders)
        versions = {c.backend: c.comfyui_version for c in await ctx.store.catalogs()}
        assert set(versions) == set(folders) and all(versions.values())
        # a model only one backend has is valid for the fleet (this job starts a backend)
        good = await client.post(
            "/prompt", json={"prompt": text_to_image_workflow(ckpt_name="only_on_b.safetensors")}
        )
        assert good.status_code == 200, good.text


@pytest.mark.slow
async def test_a_backend_restarted_with_another_model_list_is_described_again(
    tmp_path: Path,
) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    settings = fleet_settings(tmp_path, {"gpu": folder})
    async with running(settings) as (client, ctx):
        assert (await client.get("/object_info")).status_code == 200
        assert "added_later.safetensors" not in checkpoints(ctx.catalog.object_info("gpu"))
        described = asyncio.Event()
        ctx.catalog.on_change(lambda name: described.set())

        with_checkpoint(folder, "added_later.safetensors")
        await process_of(ctx, "gpu").restart()
        async with asyncio.timeout(60):
            while "added_later.safetensors" not in checkpoints(ctx.catalog.object_info("gpu")):
                described.clear()
                await described.wait()

        info = (await client.get("/object_info")).json()
        assert "added_later.safetensors" in checkpoints(info)
        [stored] = await ctx.store.catalogs()
        assert "added_later.safetensors" in stored.models["checkpoints"]


@pytest.mark.slow
async def test_a_model_added_while_the_backend_was_stopped_is_accepted_after_a_recheck(
    tmp_path: Path,
) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    settings = fleet_settings(tmp_path, {"gpu": folder})
    async with running(settings) as (client, ctx):
        assert (await client.get("/object_info")).status_code == 200
        [entry] = await ctx.store.catalogs()
    # the stored definitions are an hour old and the backend has a model they do not list
    store = open_store(settings.database_url)
    await store.open()
    await store.delete_catalog("gpu")
    await store.put_catalog(dataclasses.replace(entry, fetched_at=entry.fetched_at - 3600))
    await store.close()
    with_checkpoint(folder, "added_while_stopped.safetensors")

    async with running(settings) as (client, ctx):
        prompt = text_to_image_workflow(ckpt_name="added_while_stopped.safetensors")
        answer = await client.post("/prompt", json={"prompt": prompt})

        assert answer.status_code == 200, answer.text  # asked again, not refused on old lists
        assert process_of(ctx, "gpu").pid is not None
        assert "added_while_stopped.safetensors" in checkpoints(ctx.catalog.object_info("gpu"))
        typo = text_to_image_workflow(ckpt_name="typo.safetensors")
        assert (await client.post("/prompt", json={"prompt": typo})).status_code == 400
