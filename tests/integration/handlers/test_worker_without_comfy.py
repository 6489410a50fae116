"""A worker without ComfyUI serves handler jobs (image here) and leaves comfy jobs queued, or
fails them with a clear message when set to; nothing else stops."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from tests.integration.handlers.conftest import output_bytes, png_input
from tests.support.api import asgi_app, memory_settings, tiny_workflow


async def test_image_job_runs_on_a_worker_without_comfyui(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        assert ctx.dispatcher is None  # no backends: no ComfyUI here
        comfy = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})
        assert comfy.status_code == 201, comfy.text
        r = await client.post(
            "/api/v2/jobs?wait=30",
            json={
                "type": "image",
                "params": {"format": "webp", "quality": 80, "width": 16},
                "inputs": [png_input("red.png")],
            },
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "succeeded", job
        assert job["type"] == "image"
        [out] = job["outputs"]
        assert out["name"] == "red.webp" and out["content_type"] == "image/webp"
        data = await output_bytes(ctx, out, job["id"])
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "WEBP"
            assert img.size == (16, 10)  # 33x21 resized to width 16, ratio kept
        still = await client.get(f"/api/v2/jobs/{comfy.json()['id']}")
        assert still.json()["status"] == "queued"  # left for a worker with ComfyUI


async def test_comfy_jobs_fail_clearly_when_set_to_and_image_jobs_go_on(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, types=["comfy", "image"], comfy_without_backends="fail")
    async with asgi_app(settings) as (_, client, _ctx):
        comfy = await client.post("/api/v2/jobs?wait=30", json={"workflow": tiny_workflow()})
        assert comfy.status_code == 201, comfy.text
        failed = comfy.json()
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "comfy_unavailable"
        assert "no ComfyUI backend" in failed["error"]["message"]
        assert failed["attempts"] == 1  # not retried: no attempt here could ever run it
        image = await client.post(
            "/api/v2/jobs?wait=30",
            json={"type": "image", "params": {"format": "jpeg"}, "inputs": [png_input("a.png")]},
        )
        assert image.json()["status"] == "succeeded", image.text
        assert image.json()["outputs"][0]["content_type"] == "image/jpeg"


async def test_a_worker_declared_for_handler_types_only_is_ready(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, role="worker", types=["image", "ffmpeg"])
    async with asgi_app(settings) as (_, client, ctx):
        r = await client.get("/ready")
        assert r.status_code == 200, r.text  # no ComfyUI needed for the types it runs
        assert await ctx.store.served_types(since=0) == {"image", "ffmpeg"}
    settings = memory_settings(tmp_path, role="worker", types=["comfy", "image"])
    async with asgi_app(settings) as (_, client, _ctx):
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json()["reason"] == "no backends are configured"
