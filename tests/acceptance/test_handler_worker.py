"""Handler jobs across processes: an API node and a `comfyrun worker --types image` without
ComfyUI share one SQLite database; the API accepts image jobs once the worker announced its
types, refuses types nobody serves, and the worker runs the image jobs while comfy jobs wait."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.acceptance.conftest import StartServer
from tests.support.api import tiny_workflow

from comfyrun.client import ComfyrunClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 120, 240)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def test_a_worker_without_comfyui_serves_image_jobs(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'queue.db'}"
    outputs = f"file://{tmp_path / 'outputs'}"
    api = start_server("api", "--db", db, "--outputs", outputs, "--data-dir", str(tmp_path / "a"))
    start_server(
        "worker",
        "--db", db,
        "--outputs", outputs,
        "--types", "image",
        "--data-dir", str(tmp_path / "w"),
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        # the worker announced its types before it printed its address
        refused = await http.post("/api/v2/jobs", json={"type": "ffmpeg"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"]["served"] == ["image"]
        comfy = await http.post("/api/v2/jobs", json={"workflow": tiny_workflow()})
        assert comfy.status_code == 201, comfy.text
        async with ComfyrunClient(api.url) as client:  # the SDK speaks job types too
            job = await client.submit(
                job_type="image",
                params={"format": "webp", "max_size": 8},
                inputs=[{"name": "blue.png", "data": png_b64()}],
                wait=60,
            )
        assert job["status"] == "succeeded", job
        assert job["type"] == "image"
        [out] = job["outputs"]
        download = await http.get(out["url"])
        assert download.status_code == 200
        with Image.open(io.BytesIO(download.content)) as img:
            assert img.format == "WEBP" and img.size == (8, 4)
        waiting = await http.get(f"/api/v2/jobs/{comfy.json()['id']}")
        assert waiting.json()["status"] == "queued"
