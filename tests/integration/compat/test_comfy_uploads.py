"""ComfyUI's POST /upload/image and /upload/mask over comfyrun's assets (ASGI, no backend): each
API key names its uploads in a space of its own."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
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
    answer = await http.get("/view", params={"filename": name, "type": "input"}, headers=headers)
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
