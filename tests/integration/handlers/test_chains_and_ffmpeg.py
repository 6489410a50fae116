"""Chains and the ffmpeg handler, with a ComfyUI emulator: a chain converts a comfy job's PNG
outputs to WebP (replacing or joining them); ffmpeg turns a ComfyUI image sequence into an mp4
(checked with ffprobe); a worker without ffmpeg fails such a job saying so."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.integration.handlers.conftest import output_bytes, png_input
from tests.support import handlers as test_handlers
from tests.support.api import asgi_app, memory_settings, tiny_workflow

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg is not installed (.ci/run installs it)",
)


def sequence_workflow(frames: int) -> dict[str, Any]:
    """A ComfyUI workflow saving `frames` images (one batch) as PNGs."""
    wf = tiny_workflow(color=0x3366CC)
    wf["1"]["inputs"].update({"width": 48, "height": 30, "batch_size": frames})
    return wf


def emulator_settings(tmp_path: Path) -> Any:
    return memory_settings(tmp_path, emulators=1, emulator_mode="inprocess")


async def test_a_chain_converts_png_outputs_to_webp(tmp_path: Path) -> None:
    async with asgi_app(emulator_settings(tmp_path)) as (_, client, ctx):
        body = {
            "workflow": sequence_workflow(2),
            "then": [{"type": "image", "params": {"format": "webp", "quality": 85}}],
        }
        r = await client.post("/api/v2/jobs?wait=60", json=body)
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "succeeded", job
        assert [o["content_type"] for o in job["outputs"]] == ["image/webp", "image/webp"]
        assert all(o["node_id"] == "then1-image" for o in job["outputs"])
        for out in job["outputs"]:
            with Image.open(io.BytesIO(await output_bytes(ctx, out, job["id"]))) as img:
                assert img.format == "WEBP" and img.size == (48, 30)


async def test_a_chain_step_may_join_the_outputs(tmp_path: Path) -> None:
    async with asgi_app(emulator_settings(tmp_path)) as (_, client, _ctx):
        body = {
            "workflow": tiny_workflow(),
            "then": [
                {"type": "image", "params": {"max_size": 4, "format": "jpeg"}, "outputs": "join"}
            ],
        }
        job = (await client.post("/api/v2/jobs?wait=60", json=body)).json()
        assert job["status"] == "succeeded", job
        kinds = sorted(o["content_type"] for o in job["outputs"])
        assert kinds == ["image/jpeg", "image/png"]


async def test_a_failing_chain_step_fails_the_job(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path,
        emulators=1,
        emulator_mode="inprocess",
        handlers=["refuse=tests.support.handlers:failing"],
    )
    async with asgi_app(settings) as (_, client, _ctx):
        body = {
            "workflow": tiny_workflow(),
            "max_retries": 2,
            "then": [{"type": "image"}, {"type": "refuse", "params": {"what": "refuse"}}],
        }
        job = (await client.post("/api/v2/jobs?wait=60", json=body)).json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "step_refused"
        assert job["error"]["message"] == "cannot refuse"
        assert job["attempts"] == 1  # a handler's own failure is final, like a node error
        assert job["outputs"] == []  # a job succeeds with its outputs or not at all


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


@needs_ffmpeg
async def test_ffmpeg_turns_a_comfyui_image_sequence_into_an_mp4(tmp_path: Path) -> None:
    async with asgi_app(emulator_settings(tmp_path)) as (_, client, ctx):
        body = {
            "workflow": sequence_workflow(12),
            "then": [{"type": "ffmpeg", "params": {"fps": 6, "name": "clip"}}],
        }
        r = await client.post("/api/v2/jobs?wait=120", json=body)
        job = r.json()
        assert job["status"] == "succeeded", job
        [video] = job["outputs"]
        assert video["name"] == "clip.mp4" and video["content_type"] == "video/mp4"
        path = tmp_path / "clip.mp4"
        path.write_bytes(await output_bytes(ctx, video, job["id"]))
        info = ffprobe(path)
        [stream] = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert stream["codec_name"] == "h264"
        assert int(stream["nb_frames"]) == 12
        assert (stream["width"], stream["height"]) == (48, 30)
        assert stream["avg_frame_rate"] == "6/1"
        assert abs(float(info["format"]["duration"]) - 2.0) < 0.2


@needs_ffmpeg
async def test_an_ffmpeg_job_reports_progress_and_encodes_frames(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        frames = [png_input(f"f{i:02d}.png", (i * 20, 90, 160)) for i in range(8)]
        r = await client.post(
            "/api/v2/jobs?wait=120",
            json={"type": "ffmpeg", "params": {"format": "webm", "fps": 4}, "inputs": frames},
        )
        job = r.json()
        assert job["status"] == "succeeded", job
        [video] = job["outputs"]
        assert video["content_type"] == "video/webm"
        path = tmp_path / "v.webm"
        path.write_bytes(await output_bytes(ctx, video, job["id"]))
        [stream] = ffprobe(path)["streams"]
        assert stream["codec_name"] == "vp9"
        assert job["progress"]["value"] == 1.0


async def test_a_worker_without_ffmpeg_fails_ffmpeg_jobs_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    async with asgi_app(memory_settings(tmp_path / "data")) as (_, client, _ctx):
        r = await client.post(
            "/api/v2/jobs?wait=30",
            json={"type": "ffmpeg", "params": {}, "inputs": [png_input("a.png")]},
        )
        job = r.json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "handler_unavailable"
        assert "ffmpeg is not installed on this worker" in job["error"]["message"]


async def test_cancel_and_timeout_reach_a_running_chain_step(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path,
        emulators=1,
        emulator_mode="inprocess",
        handlers=["slow=tests.support.handlers:blocking"],
    )
    async with asgi_app(settings) as (_, client, ctx):
        body = {"workflow": tiny_workflow(), "then": [{"type": "slow"}]}
        job_id = (await client.post("/api/v2/jobs", json=body)).json()["id"]
        assert await asyncio.to_thread(test_handlers.started.wait, 30)
        await client.post(f"/api/v2/jobs/{job_id}/cancel")
        view = await ctx.service.wait(job_id, 30)
        assert view.job.status.value == "canceled"
        assert test_handlers.stopped_by == ["canceled"]
        test_handlers.reset()
        body = {"workflow": tiny_workflow(1), "then": [{"type": "slow"}], "timeout_s": 1}
        body["max_retries"] = 0
        job_id = (await client.post("/api/v2/jobs", json=body)).json()["id"]
        view = await ctx.service.wait(job_id, 30)
        assert view.job.status.value == "failed"
        assert view.job.error is not None and view.job.error.code == "timeout"
        assert test_handlers.stopped_by == ["timeout"]
