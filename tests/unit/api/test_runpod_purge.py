"""RunPod's /purge-queue counts what it removed: two at once counted each job twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun.core.job import JobStatus


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
