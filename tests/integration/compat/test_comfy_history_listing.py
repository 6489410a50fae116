"""ComfyUI's GET /history as its editor asks for it on each change of the queue (the newest N):
the newest N, oldest first, read alone, not the whole listing; an offset counts from the
oldest, as in ComfyUI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.service import JobService


async def test_the_newest_n_are_read_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    listing = JobService.list_jobs

    async def counted(self: JobService, **kwargs: Any) -> Any:
        asked.append(kwargs["limit"])
        return await listing(self, **kwargs)

    monkeypatch.setattr(JobService, "list_jobs", counted)
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        ids = []
        for i in range(5):
            job, _ = await ctx.store.enqueue(new_job(), now=1000.0 + i)
            claimed = await ctx.store.claim("w", 30, now=1000.0 + i)
            assert claimed is not None and claimed.id == job.id
            await ctx.store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
            ids.append(job.id)
        await ctx.store.enqueue(new_job(), now=2000.0)  # unfinished: never listed

        newest = (await http.get("/history", params={"max_items": 2})).json()
        assert list(newest) == ids[3:]
        assert asked == [2]  # two read, not the last 1,000

        asked.clear()
        assert (
            list((await http.get("/history", params={"max_items": 2, "offset": 0})).json())
            == (ids[:2])
        )
        assert list((await http.get("/history", params={"offset": 3})).json()) == ids[3:]
        assert list((await http.get("/history", params={"max_items": 9, "offset": -1})).json()) == (
            ids
        )
        assert list((await http.get("/history")).json()) == ids


async def test_clearing_the_history_clears_past_the_listings_cap(tmp_path: Path) -> None:
    """POST /history {"clear": true} removes every finished prompt, not only the 1,000 one
    listing shows; unfinished jobs stay."""
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        for i in range(1_005):
            job, _ = await ctx.store.enqueue(new_job(), now=1000.0 + i)
            claimed = await ctx.store.claim("w", 30, now=1000.0 + i)
            assert claimed is not None and claimed.id == job.id
            await ctx.store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        waiting, _ = await ctx.store.enqueue(new_job(), now=5000.0)
        assert (await http.post("/history", json={"clear": True})).status_code == 200
        assert (await http.get("/history")).json() == {}
        counts = await ctx.store.counts()
        assert counts[JobStatus.SUCCEEDED] == 0 and counts[JobStatus.QUEUED] == 1
        assert [e.id for e in await ctx.store.queue()] == [waiting.id]
