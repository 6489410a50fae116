"""An API node with no backends of its own (role api) answers ComfyUI's node definitions that a
worker (role worker) fetched from its backends and stored in the shared PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tests.support.store import drop_schema, new_schema_name, require_pg, store_url

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.config import Settings
from comfyrun.outputs.memory import MemoryOutputStorage


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext]]:
    app = create_app(settings, storage=MemoryOutputStorage())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app.state.ctx


async def described(ctx: AppContext, backend: str) -> None:
    """Until the worker's catalog holds `backend` (woken by its change callback)."""
    changed = asyncio.Event()
    ctx.catalog.on_change(lambda name: changed.set())
    async with asyncio.timeout(60):
        while ctx.catalog.get(backend) is None:
            changed.clear()
            await changed.wait()


@pytest.mark.postgres
async def test_an_api_node_answers_definitions_a_worker_stored(tmp_path: Path) -> None:
    require_pg()
    schema = new_schema_name()
    db_url = store_url("postgres", tmp_path, schema)
    common = {"db_url": db_url, "api_keys": []}
    worker = Settings(
        data_dir=tmp_path / "worker",
        role="worker",
        emulators=1,
        emulator_mode="inprocess",
        **common,
    )
    try:
        async with running(worker) as (_, worker_ctx):
            await described(worker_ctx, "emulator-1")
            async with running(Settings(data_dir=tmp_path / "api", role="api", **common)) as (
                client,
                api_ctx,
            ):
                assert api_ctx.pool is None
                answer = await client.get("/api/object_info")
                assert answer.status_code == 200, answer.text
                assert answer.json() == worker_ctx.catalog.object_info("emulator-1")
                ksampler = (await client.get("/object_info/KSampler")).json()
                assert "KSampler" in ksampler
                assert (await client.get("/models/checkpoints")).json()
    finally:
        drop_schema(schema)
