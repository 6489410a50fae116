"""RunPod's POST /purge-queue over an in-memory store: it cancels the jobs queued when it began,
page after page, and a job it cannot cancel is passed over, not tried again forever; it counts
what it canceled itself (two at once counted each job twice)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun import errors
from comfyrun.core.job import JobStatus


async def test_purge_passes_over_a_job_it_cannot_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, ctx):
        ids = []
        for color in range(3):
            r = await client.post("/run", json={"input": {"workflow": tiny_workflow(color)}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        stuck = ids[1]
        cancel = type(ctx.service).cancel_queued

        async def failing(self: Any, job_id: str) -> Any:
            if job_id == stuck:
                raise errors.StoreError("the store is failing for this one")
            return await cancel(self, job_id)

        monkeypatch.setattr(type(ctx.service), "cancel_queued", failing)
        async with asyncio.timeout(10):  # the old loop read the same page again forever
            purged = (await client.post("/purge-queue")).json()
        assert purged == {"removed": 2, "status": "completed"}
        statuses = [(await client.get(f"/status/{i}")).json()["status"] for i in ids]
        assert statuses == ["CANCELLED", "IN_QUEUE", "CANCELLED"]


async def test_two_purges_at_once_count_each_job_once(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        body = {"input": {"workflow": tiny_workflow()}}
        ids = [(await client.post("/run", json=body)).json()["id"] for _ in range(30)]
        # both purges read the queue before either cancels (as on a store that waits on I/O)
        both_listed = asyncio.Barrier(2)
        list_jobs = ctx.service.list_jobs

        async def listed_together(*args: Any, **kwargs: Any) -> Any:
            page = await list_jobs(*args, **kwargs)
            if kwargs.get("statuses") == [JobStatus.QUEUED] and kwargs.get("cursor") is None:
                await both_listed.wait()
            return page

        ctx.service.list_jobs = listed_together
        first, second = await asyncio.gather(
            client.post("/purge-queue"), client.post("/purge-queue")
        )
        ctx.service.list_jobs = list_jobs
        removed = first.json()["removed"] + second.json()["removed"]
        assert removed == 30, (first.json(), second.json())
        statuses = [(await client.get(f"/status/{job_id}")).json()["status"] for job_id in ids]
        assert statuses == ["CANCELLED"] * 30
        assert (await client.post("/purge-queue")).json()["removed"] == 0
