"""ComfyUI's upload folders through comfyrun, side by side with the emulator (which answers as
ComfyUI's server.py): an upload of `type` output or temp is kept in that folder, found by
/view of that type and by a prompt's annotated name ("x.png [output]"); a subfolder that leaves
its folder is refused as ComfyUI refuses it (uploads 400, /view 403)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.integration.compat.conftest import Server
from tests.integration.compat.test_comfy_dialect import ComfyExampleClient, load_and_save
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator


def png(color: tuple[int, int, int], size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def sides(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(comfyrun, ComfyUI's emulator): the same requests, to compare the answers."""
    async with (
        running_emulator(tmp_path / "emu") as emu,
        asgi_app(memory_settings(tmp_path / "comfyrun")) as (_, ours, _ctx),
        httpx.AsyncClient(base_url=str(emu.url), timeout=30) as theirs,
    ):
        yield ours, theirs


async def answers(http: httpx.AsyncClient, asked: list[tuple[str, str, Any]]) -> list[Any]:
    """(status, body if JSON, bytes if 200) of each ("POST"/"GET", path, fields/params)."""
    out: list[Any] = []
    for method, path, fields in asked:
        if method == "POST":
            name = fields.pop("name", "pic.png")
            files = {"image": (name, fields.pop("data", png((1, 2, 3))), "image/png")}
            answer = await http.post(path, files=files, data=fields)
        else:
            answer = await http.get(path, params=fields)
        body = answer.json() if answer.status_code == 200 and path.startswith("/upload") else None
        content = answer.content if answer.status_code == 200 and path == "/view" else None
        out.append((answer.status_code, body, content))
    return out


async def test_an_upload_to_output_or_temp_is_kept_there(
    sides: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """An upload of type output or temp was kept as an input and answered "type": "input";
    /view of its type found nothing. ComfyUI keeps it in that folder."""
    red, blue, green = png((255, 0, 0)), png((0, 0, 255)), png((0, 255, 0))

    def asked() -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/upload/image", {"data": red, "type": "output"}),
            ("POST", "/upload/image", {"data": blue, "type": "temp", "subfolder": "t"}),
            ("POST", "/upload/image", {"data": green, "type": "output"}),  # renamed: pic (1)
            ("POST", "/upload/image", {"data": green, "type": "input"}),  # no clash: pic.png
            ("GET", "/view", {"filename": "pic.png", "type": "output"}),
            ("GET", "/view", {"filename": "pic (1).png"}),  # (output, ComfyUI's default)
            ("GET", "/view", {"filename": "pic.png", "subfolder": "t", "type": "temp"}),
            ("GET", "/view", {"filename": "pic.png", "type": "input"}),
            ("GET", "/view", {"filename": "pic.png [output]", "type": "input"}),
            ("GET", "/view", {"filename": "pic.png", "type": "temp"}),  # (in t/ only)
            ("GET", "/view", {"filename": "pic.png [temp]", "subfolder": "t"}),
            ("POST", "/upload/image", {"data": red, "type": "nowhere"}),
        ]

    ours, theirs = [await answers(http, asked()) for http in sides]
    assert ours[:-1] == theirs[:-1]
    assert [status for status, _, _ in ours] == [200] * 9 + [404, 200, 400]
    assert [body for _, body, _ in ours[:4]] == [
        {"name": "pic.png", "subfolder": "", "type": "output"},
        {"name": "pic.png", "subfolder": "t", "type": "temp"},
        {"name": "pic (1).png", "subfolder": "", "type": "output"},
        {"name": "pic.png", "subfolder": "", "type": "input"},
    ]
    assert [content for _, _, content in ours[4:9]] == [red, green, blue, green, red]
    assert theirs[-1][0] in (400, 500)  # ComfyUI's get_dir_by_type fails on it


@pytest.mark.parametrize(
    ("subfolder", "status"),
    [("/etc", 400), ("../x", 400), ("a/../../x", 400), ("..", 400), ("a/../b", 200), (".", 200)],
)
async def test_an_upload_to_a_subfolder_outside_its_folder_is_refused(
    sides: tuple[httpx.AsyncClient, httpx.AsyncClient], subfolder: str, status: int
) -> None:
    """ComfyUI refuses an upload whose path leaves its folder (its commonpath check): "/etc"
    was taken and stored as "etc/"."""
    for http in sides:
        for path, extra in (("/upload/image", {}), ("/upload/mask", {"original_ref": "{}"})):
            fields = {"subfolder": subfolder, **extra}
            answer = await http.post(path, files={"image": ("m.png", png((9, 9, 9)))}, data=fields)
            expected = status if path == "/upload/image" else 400  # (no original: 400 anyway)
            assert answer.status_code == expected, (str(http.base_url), path, answer.text)
            if answer.status_code == 200:
                assert answer.json() == {"name": "m.png", "subfolder": subfolder, "type": "input"}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"subfolder": "/etc"}, 403),
        ({"subfolder": "../x"}, 403),
        ({"subfolder": "a/../.."}, 403),
        ({"subfolder": "/etc", "type": "input"}, 403),
        ({"filename": "../pic.png"}, 400),
        ({"filename": "/pic.png"}, 400),
        ({"filename": "pic..png"}, 400),  # ('..' anywhere in the name)
        ({"filename": ""}, 400),
        ({"filename": " [input]"}, 400),
        ({"type": "nowhere"}, 400),
        ({"filename": "sub/pic.png", "type": "input"}, 200),  # (its base name is served)
        ({"subfolder": "", "type": "input"}, 200),
        ({"subfolder": "./", "type": "input"}, 200),
        ({"subfolder": "sub", "type": "input"}, 404),
    ],
)
async def test_view_refuses_what_comfyui_refuses(
    sides: tuple[httpx.AsyncClient, httpx.AsyncClient], params: dict[str, str], status: int
) -> None:
    for http in sides:
        up = await http.post("/upload/image", files={"image": ("pic.png", png((4, 5, 6)))})
        assert up.status_code == 200, up.text
        answer = await http.get("/view", params={"filename": "pic.png", **params})
        assert answer.status_code == status, (str(http.base_url), params, answer.text)


async def test_a_prompt_loads_an_upload_named_with_its_folder(server: Server) -> None:
    """LoadImage of "x.png [output]", a file uploaded with type output, reads it in ComfyUI;
    comfyrun placed nothing and the backend failed the prompt."""
    picture = png((10, 20, 30), size=(12, 8))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for kind in ("output", "temp"):
            files = {"image": ("up.png", picture, "image/png")}
            answer = await http.post("/upload/image", files=files, data={"type": kind})
            assert answer.json() == {"name": "up.png", "subfolder": "", "type": kind}
        client = ComfyExampleClient(server, http)
        async with client.connected():
            for kind in ("output", "temp"):
                prompt = load_and_save(f"up.png [{kind}]", kind)
                prompt["3"] = {"class_type": "LoadImage", "inputs": {"image": f"up.png [{kind}]"}}
                prompt["4"] = {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["3", 0], "filename_prefix": "again"},
                }
                prompt_id, messages = await client.run_prompt(prompt)
                assert "execution_success" in [m["type"] for m in messages], messages
                images = await client.images(prompt_id)
                assert len(images) == 2
                for _, data in images:
                    with Image.open(io.BytesIO(data)) as img:
                        assert img.size == (12, 8) and img.getpixel((0, 0)) == (10, 20, 30)


async def test_a_mask_is_drawn_on_an_upload_kept_as_an_output(
    sides: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """The mask editor names its image by type: an upload of type output is found there (it
    was a 404: not a job's output), and the mask is kept where its own `type` says."""
    mask = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(mask, format="PNG")
    ref = '{"filename": "pic.png", "subfolder": "", "type": "output"}'
    for http in sides:
        up = await http.post(
            "/upload/image", files={"image": ("pic.png", png((9, 8, 7)))}, data={"type": "output"}
        )
        assert up.status_code == 200, up.text
        answer = await http.post(
            "/upload/mask",
            files={"image": ("m.png", mask.getvalue(), "image/png")},
            data={"original_ref": ref, "type": "temp"},
        )
        assert answer.status_code == 200, (str(http.base_url), answer.text)
        assert answer.json() == {"name": "m.png", "subfolder": "", "type": "temp"}
        view = await http.get("/view", params={"filename": "m.png", "type": "temp"})
        with Image.open(io.BytesIO(view.content)) as img:
            assert img.getpixel((0, 0)) == (9, 8, 7, 128)
