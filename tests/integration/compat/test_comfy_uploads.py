"""ComfyUI's POST /upload/image and /upload/mask over comfyrun's assets (ASGI, no backend): each
API key names its uploads in a space of its own."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, PngImagePlugin
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator

from comfyrun.api.compat.comfy_uploads import OWNED_PREFIX, upload_key
from comfyrun.api.context import AppContext

ADMIN = "uploads-admin"


def png(color: tuple[int, ...], size: tuple[int, int] = (4, 4), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext]]:
    async with asgi_app(memory_settings(tmp_path, api_keys=[ADMIN])) as (_, client, ctx):
        yield client, ctx


async def mint(http: httpx.AsyncClient, name: str) -> dict[str, str]:
    answer = await http.post(
        "/api/v2/admin/keys",
        json={"name": name, "scopes": ["read", "submit"]},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['key']}"}


async def upload(
    http: httpx.AsyncClient, headers: dict[str, str], data: bytes, **fields: Any
) -> Any:
    answer = await http.post(
        "/upload/image",
        files={"image": ("shared.png", data, "image/png")},
        data=fields,
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def viewed(http: httpx.AsyncClient, headers: dict[str, str], name: str) -> bytes | None:
    subfolder, _, filename = name.rpartition("/")
    params = {"filename": filename, "subfolder": subfolder, "type": "input"}
    answer = await http.get("/view", params=params, headers=headers)
    return answer.content if answer.status_code == 200 else None


async def test_each_key_names_its_uploads_in_a_space_of_its_own(
    keyed: tuple[httpx.AsyncClient, AppContext],
) -> None:
    """Named in one space for all keys, another key's upload of the same name was renamed for
    it ("shared (1).png": telling the name was taken) and, with overwrite, took the name over:
    the first key's file answered 404 and its prompts were refused (missing_asset)."""
    http, _ = keyed
    a, b = await mint(http, "team-a"), await mint(http, "team-b")
    mine, theirs = png((255, 0, 0)), png((0, 0, 255))
    assert (await upload(http, a, mine))["name"] == "shared.png"
    assert (await upload(http, b, theirs))["name"] == "shared.png"
    assert (await upload(http, b, png((0, 9, 9)), overwrite="true"))["name"] == "shared.png"
    assert await viewed(http, a, "shared.png") == mine
    assert await viewed(http, b, "shared.png") == png((0, 9, 9))
    # within one key, ComfyUI's renaming as before
    assert (await upload(http, a, theirs))["name"] == "shared (1).png"
    # an admin is ComfyUI's one user: a space of its own too
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert (await upload(http, admin, png((1, 1, 1))))["name"] == "shared.png"
    assert await viewed(http, a, "shared.png") == mine


async def test_a_keys_upload_from_before_is_still_its_own(
    keyed: tuple[httpx.AsyncClient, AppContext],
) -> None:
    """An upload a key made while all were named in one space is still found by its name,
    by that key only."""
    http, ctx = keyed
    a, b = await mint(http, "team-a"), await mint(http, "team-b")
    mine = png((3, 2, 1))
    await upload(http, a, mine, subfolder="old")
    storage: Any = ctx.storage
    owned = next(k for k in storage._blobs if k.startswith(f"{OWNED_PREFIX}/"))
    record = b"".join([chunk async for chunk in storage.open(owned)])
    legacy = upload_key("old/shared.png")
    assert legacy is not None
    await storage.put_bytes(legacy, record, content_type="application/json")
    await storage.delete(owned)
    assert await viewed(http, a, "old/shared.png") == mine
    assert await viewed(http, b, "old/shared.png") is None


@pytest.fixture
async def side_by_side(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(comfyrun, ComfyUI's emulator): the same requests, to compare the answers."""
    async with (
        running_emulator(tmp_path / "emu") as emu,
        asgi_app(memory_settings(tmp_path / "comfyrun")) as (_, ours, _ctx),
        httpx.AsyncClient(base_url=str(emu.url), timeout=30) as theirs,
    ):
        yield ours, theirs


async def test_the_same_bytes_again_keep_their_name(
    side_by_side: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """ComfyUI compares an upload with the file of its name: the same bytes keep the name
    ("a.png", not "a (1).png"), as do the same bytes as a renamed file's."""
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    answers: list[list[Any]] = [[], []]
    for side, http in enumerate(side_by_side):
        for data, fields in (
            (red, {}),
            (red, {}),
            (blue, {}),
            (blue, {}),
            (red, {"subfolder": "sub"}),
            (red, {"subfolder": "sub"}),
            (blue, {"overwrite": "true"}),
            (red, {}),
        ):
            answer = await http.post(
                "/upload/image", files={"image": ("a.png", data, "image/png")}, data=fields
            )
            assert answer.status_code == 200, answer.text
            answers[side].append(answer.json())
    ours, theirs = answers
    assert ours == theirs
    assert [a["name"] for a in ours] == [
        "a.png", "a.png", "a (1).png", "a (1).png", "a.png", "a.png", "a.png", "a (2).png"
    ]  # fmt: skip


def drawn_mask(size: tuple[int, int]) -> bytes:
    """What the mask editor sends: black, the mask in the alpha (a gradient here)."""
    mask = Image.new("RGBA", size, (0, 0, 0, 0))
    mask.putdata(
        [(0, 0, 0, (x * 40 + y * 7) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


async def test_a_mask_is_put_on_the_image_it_was_drawn_on(
    side_by_side: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """The mask editor uploads only the mask and names the image in `original_ref`: stored
    as given, the image a LoadImage then read was the black mask, not the picture."""
    picture = Image.new("RGB", (6, 4), (200, 100, 50))
    picture.putpixel((1, 1), (1, 2, 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", '{"nodes": []}')
    original = io.BytesIO()
    picture.save(original, format="PNG", pnginfo=info)
    ref = json.dumps({"filename": "pic.png", "subfolder": "", "type": "input"})
    got: list[Image.Image] = []
    for http in side_by_side:
        up = await http.post("/upload/image", files={"image": ("pic.png", original.getvalue())})
        assert up.status_code == 200, up.text
        for size, name in (((6, 4), "clipspace-mask-1.png"), ((3, 2), "clipspace-mask-2.png")):
            answer = await http.post(
                "/upload/mask",
                files={"image": (name, drawn_mask(size), "image/png")},
                data={"original_ref": ref, "type": "input", "subfolder": "clipspace"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"name": name, "subfolder": "clipspace", "type": "input"}
        for name in ("clipspace-mask-1.png", "clipspace-mask-2.png"):
            params = {"filename": name, "subfolder": "clipspace", "type": "input"}
            view = await http.get("/view", params=params)
            assert view.status_code == 200, view.text
            got.append(Image.open(io.BytesIO(view.content)))
    ours, theirs = got[:2], got[2:]
    for mine, emulated in zip(ours, theirs, strict=True):
        assert mine.mode == "RGBA" and mine.tobytes() == emulated.tobytes()
    assert ours[0].getpixel((1, 1)) == (1, 2, 3, 47)
    assert ours[0].getpixel((5, 0)) == (200, 100, 50, 200)
    assert ours[0].text.get("workflow") == '{"nodes": []}'  # as ComfyUI keeps the PNG text


@pytest.mark.parametrize(
    ("original_ref", "status"),
    [
        (None, 400),
        ("not json", 400),
        ("[1]", 400),
        ('{"subfolder": ""}', 400),
        ('{"filename": "missing.png", "type": "input"}', 404),
        ('{"filename": "../pic.png", "type": "input"}', 400),
        ('{"filename": "/etc/passwd", "type": "input"}', 400),
        ('{"filename": "pic.png", "subfolder": "../..", "type": "input"}', 403),
    ],
)
async def test_a_mask_on_a_bad_original_ref_is_a_4xx(
    side_by_side: tuple[httpx.AsyncClient, httpx.AsyncClient],
    original_ref: str | None,
    status: int,
) -> None:
    """ComfyUI fails on a missing or bad `original_ref` with a 500 and answers 200 while
    saving nothing for one that is not there; comfyrun answers as the emulator does, and
    stores nothing."""
    for http in side_by_side:
        up = await http.post("/upload/image", files={"image": ("pic.png", png((9, 9, 9)))})
        assert up.status_code == 200
        fields = {"type": "input"} | ({"original_ref": original_ref} if original_ref else {})
        answer = await http.post(
            "/upload/mask", files={"image": ("m.png", drawn_mask((4, 4)))}, data=fields
        )
        assert answer.status_code == status, (str(http.base_url), answer.text)
        view = await http.get("/view", params={"filename": "m.png", "type": "input"})
        assert view.status_code == 404


async def test_a_mask_that_is_no_image_is_a_400(
    side_by_side: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ref = json.dumps({"filename": "pic.png", "type": "input"})
    for http in side_by_side:
        await http.post("/upload/image", files={"image": ("pic.png", png((9, 9, 9)))})
        answer = await http.post(
            "/upload/mask", files={"image": ("m.png", b"not a png")}, data={"original_ref": ref}
        )
        assert answer.status_code == 400, (str(http.base_url), answer.text)


async def test_features_tell_comfyruns_own_upload_limit(tmp_path: Path) -> None:
    """ComfyUI's /features tells the upload limit it enforces (--max-upload-size); comfyrun
    told ComfyUI's default of 100 MiB whatever its own max_upload_bytes (1 GiB by default)."""
    async with asgi_app(memory_settings(tmp_path, max_upload_bytes=5000)) as (_, http, _ctx):
        features = (await http.get("/api/features")).json()
        assert features == {"supports_preview_metadata": True, "max_upload_size": 5000}
        big = png((1, 2, 3), size=(200, 200), mode="RGB") + b"\0" * 6000
        answer = await http.post("/upload/image", files={"image": ("big.png", big)})
        assert answer.status_code in (400, 413), answer.text


async def test_a_keys_output_upload_is_its_own(
    keyed: tuple[httpx.AsyncClient, AppContext],
) -> None:
    """An upload of type output (or temp) is named in its key's space as an input is: another
    key neither sees it nor has its name taken."""
    http, _ = keyed
    a, b = await mint(http, "team-a"), await mint(http, "team-b")
    mine = png((7, 7, 7))
    assert (await upload(http, a, mine, type="output"))["type"] == "output"
    view = {"filename": "shared.png", "type": "output"}
    assert (await http.get("/view", params=view, headers=a)).content == mine
    assert (await http.get("/view", params=view, headers=b)).status_code == 404
    theirs = await upload(http, b, png((8, 8, 8)), type="output")
    assert theirs == {"name": "shared.png", "subfolder": "", "type": "output"}
    assert (await http.get("/view", params=view, headers=a)).content == mine
