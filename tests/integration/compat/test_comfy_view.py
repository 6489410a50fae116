"""ComfyUI's GET /view through comfyrun, side by side with the emulator (which serves it as
ComfyUI's server.py does): its image conversions (the mask editor's `channel=a` and `rgb`, the
editor's `preview=` format), an input and an output alike."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.integration.compat.conftest import Server
from tests.support.emulator import running_emulator


def rgba_png() -> bytes:
    img = Image.new("RGBA", (8, 6), (10, 200, 30, 255))
    for x in range(8):
        img.putpixel((x, 0), (250, 5, 5, x * 30))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


ASKED = [
    {"channel": "a"},
    {"channel": "rgb"},
    {"channel": "rgba"},
    {"preview": "webp;50"},
    {"preview": "jpeg;80"},
    {"preview": "jpeg", "channel": "rgba"},  # (an "a" in channel: webp, as ComfyUI)
    {"preview": "png"},  # (neither webp nor jpeg: webp)
    {"preview": "webp", "channel": "rgb"},
]


async def views(url: str, data: bytes) -> list[tuple[int, str, tuple[int, ...] | None]]:
    """Each conversion of `data` uploaded as an input: status, content type, and the pixels'
    (mode, first pixel, size) — lossy formats compared by what they keep."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        files = {"image": ("mask.png", data, "image/png")}
        up = await http.post("/upload/image", files=files, data={"subfolder": "clipspace"})
        assert up.status_code == 200, up.text
        name = up.json()["name"]
        found = []
        for asked in ASKED:
            params = {"filename": name, "subfolder": "clipspace", "type": "input", **asked}
            got = await http.get("/view", params=params)
            seen: tuple[int, ...] | None = None
            if got.status_code == 200:
                with Image.open(io.BytesIO(got.content)) as img:
                    exact = got.headers["content-type"] == "image/png"
                    pixels = [img.getpixel((x, 0)) for x in range(8)] if exact else []
                    seen = (len(img.getbands()), *img.size, *[v for p in pixels for v in p])
            found.append((got.status_code, got.headers.get("content-type", ""), seen))
        return found


async def test_view_converts_an_image_as_comfyui_does(server: Server, tmp_path: Path) -> None:
    data = rgba_png()
    async with running_emulator(tmp_path) as emu:
        expected = await views(emu.url, data)
    assert [kind for _, kind, _ in expected] == [
        "image/png",
        "image/png",
        "image/png",
        "image/webp",
        "image/jpeg",
        "image/webp",
        "image/webp",
        "image/webp",
    ]
    assert await views(server.url, data) == expected


@pytest.mark.parametrize("asked", [{"channel": "a"}, {"preview": "webp"}])
async def test_a_file_that_is_no_image_is_not_converted(
    server: Server, asked: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        files = {"image": ("notes.png", b"not an image at all", "image/png")}
        name = (await http.post("/upload/image", files=files)).json()["name"]
        got = await http.get("/view", params={"filename": name, "type": "input", **asked})
        assert got.status_code == 400 and got.json()["error"]["type"] == "invalid_image"
        missing = await http.get("/view", params={"filename": "nope.png", "type": "input", **asked})
        assert missing.status_code == 404
