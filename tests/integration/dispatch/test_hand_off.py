"""`serve`: a job submitted while a backend is idle and nothing is queued is claimed in its
enqueue's transaction and started at once, without the claim loop; otherwise it waits in the
queue as before (comfyrun.dispatch.handoff)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator, text_to_image_workflow

from comfyrun.api.context import AppContext
from comfyrun.config import BackendConfig


@asynccontextmanager
async def serve(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext, list[str]]]:
    """An app with one emulator backend; yields the ids of the jobs the claim loop claimed."""
    async with running_emulator(tmp_path / "emu", step_time_s=0.05) as emu:
        backends = [BackendConfig(name="gpu0", url=emu.url)]
        cfg = memory_settings(tmp_path, backends=backends, **settings)
        async with asgi_app(cfg) as (_, client, ctx):
            claimed: list[str] = []
            claim = ctx.store.claim

            async def counting_claim(*args: Any, **kwargs: Any) -> Any:
                job = await claim(*args, **kwargs)
                if job is not None:
                    claimed.append(job.id)
                return job

            ctx.store.claim = counting_claim  # type: ignore[method-assign]
            # the hand-off needs an idle backend: on a loaded machine its first health check
            # may still be under way when the app has started
            async with asyncio.timeout(30):
                while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            yield client, ctx, claimed


async def submit(client: httpx.AsyncClient, steps: int, wait: float | None = None) -> Any:
    params = {"wait": wait} if wait else {}
    r = await client.post(
        "/api/v2/jobs", params=params, json={"workflow": text_to_image_workflow(steps=steps)}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_job_for_an_idle_backend_is_claimed_as_it_is_enqueued(tmp_path: Path) -> None:
    async with serve(tmp_path) as (client, ctx, claimed):
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded", job
        assert claimed == []  # the claim loop never took it
        events = await ctx.store.events_since(job["id"])
        statuses = [e.data["status"] for e in events if e.kind == "status"]
        assert statuses[:2] == ["queued", "running"]
        assert events[0].created_at == events[1].created_at  # one transaction


async def test_without_hand_off_the_claim_loop_takes_it(tmp_path: Path) -> None:
    async with serve(tmp_path, hand_off=False) as (client, _ctx, claimed):
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded", job
        assert claimed == [job["id"]]


async def test_behind_a_busy_backend_a_job_waits_in_the_queue(tmp_path: Path) -> None:
    async with serve(tmp_path) as (client, ctx, claimed):
        first = await submit(client, steps=20)  # 1 s on the only backend
        second = await submit(client, steps=1)
        assert second["status"] == "queued"
        done = await ctx.service.wait(second["id"], 30)
        assert done.job.status.value == "succeeded"
        assert first["id"] not in claimed  # handed over
        assert claimed == [second["id"]]  # queued behind it: claimed when the backend freed
