"""Submission by type: a type no live worker serves is refused with 422 (or queued, by the
setting); bad handler params and bad chains are refused with 422 before anything is queued."""

from __future__ import annotations

from pathlib import Path

from tests.integration.handlers.conftest import png_input
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun.config import Role


async def test_a_type_no_worker_serves_is_refused(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"type": "upscale", "params": {}})
        assert r.status_code == 422, r.text
        body = r.json()["error"]
        assert body["code"] == "unserved_job_type"
        assert body["details"]["type"] == "upscale"
        assert "image" in body["details"]["served"] and "ffmpeg" in body["details"]["served"]
        listed = await client.get("/api/v2/jobs")
        assert listed.json()["jobs"] == []  # nothing was queued


async def test_an_api_node_refuses_types_until_a_worker_serves_them(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role=Role.API)) as (_, client, ctx):
        job = {"type": "image", "params": {}, "inputs": [png_input("a.png")]}
        refused = await client.post("/api/v2/jobs", json=job)
        assert refused.status_code == 422, refused.text
        await ctx.store.announce_worker("elsewhere", ["image"])
        accepted = await client.post("/api/v2/jobs", json=job)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["status"] == "queued"
        await ctx.store.retire_worker("elsewhere")
        assert (await client.post("/api/v2/jobs", json=job)).status_code == 422


async def test_unserved_types_queue_when_set_to(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, role=Role.API, queue_unserved_types=True)
    async with asgi_app(settings) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"type": "upscale", "params": {"x": 2}})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "queued" and r.json()["type"] == "upscale"


async def test_bad_params_and_payloads_are_refused(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        cases = [
            {"type": "image", "params": {"format": "bmpx"}},
            {"type": "image", "params": {"quality": 0}},
            {"type": "ffmpeg", "params": {"op": "explode"}},
            {"type": "image", "params": {}, "workflow": tiny_workflow()},
            {"type": "Not A Type", "params": {}},
            {"params": {}},  # a comfy job needs its workflow
            {"workflow": tiny_workflow(), "params": {"x": 1}},  # ...and takes no params
            {"workflow": tiny_workflow(), "then": [{"type": "image", "params": {"width": -1}}]},
            {"workflow": tiny_workflow(), "then": [{"type": "comfy"}]},
            {"workflow": tiny_workflow(), "then": [{"type": "image", "outputs": "merge"}]},
            {"workflow": tiny_workflow(), "then": [{"type": "nobody"}]},
        ]
        for body in cases:
            r = await client.post("/api/v2/jobs", json=body)
            assert r.status_code == 422, (body, r.text)
            assert "error" in r.json()
        assert (await client.get("/api/v2/jobs")).json()["jobs"] == []


async def test_known_types_are_handlers_here_or_types_a_live_worker_serves(
    tmp_path: Path,
) -> None:
    async with asgi_app(memory_settings(tmp_path, role=Role.API)) as (_, _client, ctx):
        types = ctx.service.job_types
        assert await types.known(ctx.store, "image")  # a built-in handler of this process
        assert not await types.known(ctx.store, "comfy")
        assert not await types.known(ctx.store, "Not A Type")
        assert not await types.known(ctx.store, "upscale")
        await ctx.store.announce_worker("elsewhere", ["upscale"])
        assert await types.known(ctx.store, "upscale")
