"""One ComfyUI folder, one managed process per GPU (`gpus = [0, 1]`): each process has its own
input/output/temp folders, so concurrent jobs with the same file name prefix never hand one
job another job's image, and the ComfyUI folder itself is left as it was."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
from PIL import Image
from tests.acceptance.process.test_managed_server import managed, settings, submit, wait_job
from tests.support.api import asgi_app
from tests.support.emulator import image_workflow
from tests.support.managed_comfy import make_emulator_folder

from comfyrun.config import BackendConfig


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def child_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode().partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs}


async def pixel(client: httpx.AsyncClient, url: str) -> tuple[int, int, int]:
    response = await client.get(httpx.URL(url).raw_path.decode())
    assert response.status_code == 200, response.text
    value = Image.open(io.BytesIO(response.content)).convert("RGB").getpixel((0, 0))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


async def test_two_gpus_on_one_folder_never_cross_outputs(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    before = tree(folder)
    cfg = BackendConfig(name="comfy", comfy_path=folder, gpus=[0, 1], lazy=False)
    colors = [0x102030 * (i + 1) & 0xFFFFFF for i in range(8)]
    # ComfyUI's copies kept (they are removed once stored by default): counted below
    kept = settings(tmp_path, cfg, clean_backend_outputs=False)
    async with asgi_app(kept) as (_app, client, ctx):
        first, second = managed(ctx, "comfy-gpu0"), managed(ctx, "comfy-gpu1")
        await asyncio.gather(first.ensure_started(), second.ensure_started())
        assert first.output_dir != second.output_dir
        data = (tmp_path / "data").resolve()
        assert first.output_dir == data / "backends" / "comfy-gpu0" / "output"
        assert second.input_dir == data / "backends" / "comfy-gpu1" / "input"
        assert first.pid is not None and second.pid is not None
        assert child_env(first.pid)["CUDA_VISIBLE_DEVICES"] == "0"
        assert child_env(second.pid)["CUDA_VISIBLE_DEVICES"] == "1"

        ids = await asyncio.gather(
            *(submit(client, image_workflow(color=c, prefix="same")) for c in colors)
        )
        jobs = await asyncio.gather(*(wait_job(client, i) for i in ids))

        assert [j["status"] for j in jobs] == ["succeeded"] * len(colors), jobs
        for color, job in zip(colors, jobs, strict=True):
            saved = [o for o in job["outputs"] if o["node_id"] == "3"]
            assert len(saved) == 1, job
            r, g, b = (color >> 16) & 255, (color >> 8) & 255, color & 255
            got = await pixel(client, saved[0]["url"])
            want = (255 - r, 255 - g, 255 - b)
            assert all(abs(x - y) <= 1 for x, y in zip(got, want, strict=True)), (color, got)
        # every job's file is in the output folder of the process that ran it, none overwritten
        written = [*first.output_dir.glob("same_*.png"), *second.output_dir.glob("same_*.png")]
        assert len(written) == len(colors)
    assert tree(folder) == before
