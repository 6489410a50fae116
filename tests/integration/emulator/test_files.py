"""Upload details the transcripts do not cover: masks, bad types, LoadImage of other folders."""

from __future__ import annotations

import io
import json

import aiohttp
from PIL import Image
from tests.support.emulator import wait_history

from comfyrun.comfy.emulator import Emulator


def _png(mode: str, color: tuple[int, ...], size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_mask_upload_applies_the_alpha_to_the_original(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("image", _png("RGB", (0, 0, 255)), filename="photo.png")
    async with session.post(f"{emu.url}/upload/image", data=form) as resp:
        assert resp.status == 200
    form = aiohttp.FormData()
    form.add_field("image", _png("RGBA", (0, 0, 0, 40)), filename="clipspace-mask.png")
    form.add_field(
        "original_ref", json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
    )
    form.add_field("subfolder", "clipspace")
    async with session.post(f"{emu.url}/upload/mask", data=form) as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "name": "clipspace-mask.png",
            "subfolder": "clipspace",
            "type": "input",
        }
    with Image.open(emu.config.input_dir / "clipspace" / "clipspace-mask.png") as img:
        assert img.mode == "RGBA" and img.getpixel((1, 1)) == (0, 0, 255, 40)
    graph = {
        "1": {
            "class_type": "LoadImage",
            "inputs": {"image": "clipspace/clipspace-mask.png [input]"},
        },
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    async with session.post(f"{emu.url}/prompt", json={"prompt": graph}) as resp:
        entry = await wait_history(session, emu.url, (await resp.json())["prompt_id"])
    assert entry["outputs"]["2"] == {"text": ["array of shape [1, 4, 6]"]}
    form = aiohttp.FormData()
    form.add_field("image", _png("RGBA", (0, 0, 0, 0)), filename="m.png")
    form.add_field("original_ref", json.dumps({"filename": "missing.png"}))
    async with session.post(f"{emu.url}/upload/mask", data=form) as resp:
        assert resp.status == 404


async def test_bad_upload_type_is_a_400_and_output_images_load(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("image", _png("RGB", (1, 2, 3)), filename="x.png")
    form.add_field("type", "bogus")
    async with session.post(f"{emu.url}/upload/image", data=form) as resp:
        assert resp.status == 400
    form = aiohttp.FormData()
    form.add_field("image", _png("RGB", (9, 9, 9)), filename="prev.png")
    form.add_field("type", "output")
    async with session.post(f"{emu.url}/upload/image", data=form) as resp:
        assert await resp.json() == {"name": "prev.png", "subfolder": "", "type": "output"}
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prev.png [output]"}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }
    async with session.post(f"{emu.url}/prompt", json={"prompt": graph}) as resp:
        assert resp.status == 200
        entry = await wait_history(session, emu.url, (await resp.json())["prompt_id"])
    assert entry["outputs"]["3"] == {"text": ["4"]}
    async with session.get(f"{emu.url}/object_info/LoadImage") as resp:
        listed = (await resp.json())["LoadImage"]["input"]["required"]["image"][0]
    assert listed == []
