"""A batch ends with one batch.completed webhook: when its last job ends, or, canceled, once
its running jobs are interrupted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import text_to_image_workflow

from comfyrun.cli.server import running_server
from comfyrun.client import ComfyrunClient


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.got = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        async with self.got:
            self.bodies.append(json.loads(await request.read()))
            self.got.notify_all()
        return web.Response(status=204)

    async def wait_for(self, n: int) -> None:
        async with self.got:
            await asyncio.wait_for(self.got.wait_for(lambda: len(self.bodies) >= n), 60)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "t2i.json").write_text(json.dumps(text_to_image_workflow(steps=2)))
    (folder / "t2i.params.json").write_text(
        json.dumps(
            {"seed": {"node": "5", "input": "seed"}, "steps": {"node": "5", "input": "steps"}}
        )
    )
    settings = memory_settings(
        tmp_path,
        port=0,
        emulators=1,
        emulator_mode="inprocess",
        emulator_step_time_s=0.05,
        webhook_allow=["127.0.0.1"],
        workflows_dir=folder,
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        yield url


async def test_batch_completed_webhook_once_per_batch(
    server: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    hook = {"url": receiver.url}
    async with ComfyrunClient(server) as client:
        done = await client.create_batch("t2i", matrix={"seed": [1, 2]}, webhook=hook)
        await receiver.wait_for(1)
        slow = await client.create_batch(
            "t2i", items=[{"params": {"seed": i, "steps": 50}} for i in range(20)], webhook=hook
        )
        canceled = await client.cancel_batch(slow["id"])
        await receiver.wait_for(2)
        final = await client.batch(slow["id"])
        jobs = (await client.batch_jobs(slow["id"], limit=100))["jobs"]
    first, second = receiver.bodies
    assert first["type"] == "batch.completed" and first["data"]["id"] == done["id"]
    assert first["data"]["status"] == "completed" and first["data"]["counts"]["succeeded"] == 2
    assert canceled["status"] in ("canceling", "canceled")
    assert second["data"]["id"] == slow["id"] and second["data"]["status"] == "canceled"
    assert final["status"] == "canceled" and final["counts"]["canceled"] >= 19
    assert all(j["status"] in ("canceled", "succeeded") for j in jobs)
    assert len(receiver.bodies) == 2
    # interrupting the running job ends it canceled without the run failing on the way
    assert not [r for r in caplog.records if getattr(r, "action", None) == "run_error"]
