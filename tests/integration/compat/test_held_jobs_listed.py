"""A job whose prompt waits in a backend's ComfyUI queue (claimed, not started) is listed as
pending by ComfyUI's /api/jobs and as queued by the v2 listing, with its backend named; one that
ComfyUI started is in progress / running."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.api import asgi_app, memory_settings
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event


async def test_held_jobs_are_pending_and_started_ones_in_progress(tmp_path: Path) -> None:
    # the API role: no dispatcher here, this test claims and places jobs as a worker would
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        store = ctx.store
        started, _ = await store.enqueue(new_job())
        held, _ = await store.enqueue(new_job())
        queued, _ = await store.enqueue(new_job())
        for job_id, runs in ((started.id, True), (held.id, False)):
            claimed = await store.claim("w", 30)
            assert claimed is not None and claimed.id == job_id
            start = time.time() if runs else None  # ComfyUI started it / it waits there
            assert await store.record_placement(
                job_id, "w", backend="gpu-1", prompt_id=job_id, execution_started_at=start
            )

        async def listed(status: str) -> list[str]:
            answer = await http.get("/api/jobs", params={"status": status})
            assert answer.status_code == 200, answer.text
            return [j["id"] for j in answer.json()["jobs"]]

        assert await listed("pending") == [queued.id, held.id]  # newest first
        assert await listed("in_progress") == [started.id]
        assert await listed("pending,in_progress") == [queued.id, held.id, started.id]
        page = (await http.get("/api/jobs", params={"status": "pending", "limit": 1})).json()
        assert [j["id"] for j in page["jobs"]] == [queued.id]
        assert page["pagination"]["has_more"] is True
        offset = {"status": "pending", "limit": 1, "offset": 1}
        assert [j["id"] for j in (await http.get("/api/jobs", params=offset)).json()["jobs"]] == [
            held.id
        ]
        # the v2 listing: held jobs are queued, with their backend
        v2 = (await http.get("/api/v2/jobs", params={"status": "queued"})).json()["jobs"]
        assert [(j["id"], j["status"]) for j in v2] == [(queued.id, "queued"), (held.id, "queued")]
        assert v2[1]["backend"] == "gpu-1"
        running = (await http.get("/api/v2/jobs", params={"status": "running"})).json()["jobs"]
        assert [j["id"] for j in running] == [started.id]


async def test_queue_lists_pending_prompts_in_the_order_they_will_start(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        short, _ = await ctx.store.enqueue(new_job(head_start_s=1.0))
        long, _ = await ctx.store.enqueue(new_job(head_start_s=30.0))  # estimated longer
        urgent, _ = await ctx.store.enqueue(new_job(priority=1))
        held, _ = await ctx.store.enqueue(new_job(priority=2))
        claimed = await ctx.store.claim("w", 30)
        assert claimed is not None and claimed.id == held.id  # waits in a backend's queue
        queue = (await http.get("/queue")).json()
        assert [item[1] for item in queue["queue_pending"]] == [
            held.id,
            urgent.id,
            long.id,
            short.id,
        ]
        order = [(await ctx.store.claim("w", 30)) for _ in range(3)]
        assert [j.id for j in order if j is not None] == [urgent.id, long.id, short.id]


async def test_a_long_queue_is_listed_from_its_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the listing's cap, /queue shows the prompts that will start next (the head of the
    queue), not the newest ones; running prompts are listed besides."""
    from comfyrun.api.routes import comfy_common

    monkeypatch.setattr(comfy_common, "MAX_LISTED", 3)
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        jobs = [(await ctx.store.enqueue(new_job(), now=1000.0 + i))[0] for i in range(6)]
        late_urgent, _ = await ctx.store.enqueue(new_job(priority=1), now=2000.0)
        claimed = await ctx.store.claim("w", 30)
        assert claimed is not None and claimed.id == late_urgent.id
        assert await ctx.store.record_placement(
            claimed.id, "w", backend="b", prompt_id=claimed.id, execution_started_at=time.time()
        )
        queue = (await http.get("/queue")).json()
        assert [item[1] for item in queue["queue_running"]] == [late_urgent.id]
        assert [item[1] for item in queue["queue_pending"]] == [j.id for j in jobs[:3]]
        assert [item[0] for item in queue["queue_pending"]] == [0, 0, 0]  # no ComfyUI number


async def test_clearing_the_queue_clears_past_the_listings_cap(tmp_path: Path) -> None:
    """POST /queue {"clear": true} removes every pending prompt, as ComfyUI does, not only
    the 1,000 one listing shows; a running prompt stays."""
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        running, _ = await ctx.store.enqueue(new_job(priority=1))
        claimed = await ctx.store.claim("w", 30)
        assert claimed is not None and claimed.id == running.id
        assert await ctx.store.record_placement(
            running.id, "w", backend="b", prompt_id=running.id, execution_started_at=time.time()
        )
        for _ in range(1_005):
            await ctx.store.enqueue(new_job())
        assert (await http.post("/queue", json={"clear": True})).status_code == 200
        assert [e.id for e in await ctx.store.queue()] == [running.id]
        queue = (await http.get("/queue")).json()
        assert queue["queue_pending"] == [] and len(queue["queue_running"]) == 1


async def test_a_prompt_id_used_again_is_listed_with_its_new_workflow(tmp_path: Path) -> None:
    """ComfyUI lets a client use a prompt_id again once its prompt is done: /queue then lists
    the new prompt, not the one it rendered before under that id."""
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, http, ctx):
        first = new_job(id="p-1", workflow={"1": {"class_type": "SaveImage", "inputs": {}}})
        await ctx.store.enqueue(first, now=1000.0)
        listed = (await http.get("/queue")).json()["queue_pending"]
        assert [(item[1], item[4]) for item in listed] == [("p-1", ["1"])]
        claimed = await ctx.store.claim("w", 30)
        assert claimed is not None and claimed.id == "p-1"
        await ctx.store.transition("p-1", Event.SUCCEED, expect=JobStatus.RUNNING)
        await ctx.service.delete("p-1")
        again = new_job(id="p-1", workflow={"7": {"class_type": "PreviewImage", "inputs": {}}})
        await ctx.store.enqueue(again, now=2000.0)
        listed = (await http.get("/queue")).json()["queue_pending"]
        assert [(item[1], item[2], item[4]) for item in listed] == [("p-1", again.workflow, ["7"])]
