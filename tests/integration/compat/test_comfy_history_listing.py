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


async def test_the_newest_n_are_read_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_items=N alone lists the newest N (their stamps); whole jobs are read only for the
    entries not rendered yet, so a listing asked again reads none."""
    from comfyrun.store.memory import MemoryStore

    asked: list[int] = []
    read: list[list[str]] = []
    stamps, get_many = MemoryStore.stamps, MemoryStore.get_many

    async def counted(self: MemoryStore, **kwargs: Any) -> Any:
        asked.append(kwargs["limit"])
        return await stamps(self, **kwargs)

    async def reading(self: MemoryStore, job_ids: Any) -> Any:
        read.append(list(job_ids))
        return await get_many(self, job_ids)

    monkeypatch.setattr(MemoryStore, "stamps", counted)
    monkeypatch.setattr(MemoryStore, "get_many", reading)
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
        assert asked == [2]  # two listed, not the last 1,000
        assert [sorted(r) for r in read] == [sorted(ids[3:])]
        assert (await http.get("/history", params={"max_items": 2})).json() == newest
        assert len(read) == 1  # rendered already: no job read again
        late, _ = await ctx.store.enqueue(new_job(), now=3000.0)
        claimed = await ctx.store.claim("w", 30, now=3000.0)
        assert claimed is not None
        await ctx.store.transition(claimed.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        await ctx.store.delete(ids[4])
        newest = (await http.get("/history", params={"max_items": 2})).json()
        assert list(newest) == [ids[3], claimed.id]  # the one deleted meanwhile left out
        assert read[1:] == [[claimed.id]]  # only the new one read whole

        asked.clear()
        finished = [*ids[:4], claimed.id]  # oldest first
        listed = (await http.get("/history", params={"max_items": 2, "offset": 0})).json()
        assert list(listed) == finished[:2]
        assert list((await http.get("/history", params={"offset": 3})).json()) == finished[3:]
        nine = (await http.get("/history", params={"max_items": 9, "offset": -1})).json()
        assert list(nine) == finished
        assert list((await http.get("/history")).json()) == finished
        assert late.status is JobStatus.QUEUED  # never listed


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
