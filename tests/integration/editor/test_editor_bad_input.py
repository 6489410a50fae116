"""Requests to the editor's per-user routes that ComfyUI's code answers with a 500 or with a
state the editor cannot read back: comfyrun answers a clear 4xx, and the user's files stay
as they were."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        yield client


async def test_a_move_onto_a_folder_or_under_a_file_is_a_400(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """ComfyUI's shutil.move put the file into a folder named as its destination (answering
    the folder's path), failed with a 500 where the folder held a file of its name, and
    failed with a 500 for a destination under a file."""
    for name, body in (("a.json", b"1"), ("b.json", b"2"), ("d%2Fa.json", b"3")):
        assert (await http.post(f"/api/userdata/{name}", content=body)).status_code == 200
    into = await http.post("/api/userdata/a.json/move/d")
    assert into.status_code == 400, into.text
    under = await http.post("/api/userdata/b.json/move/a.json%2Fx.json")
    assert under.status_code == 400, under.text
    user = tmp_path / "user" / "default"
    assert (user / "a.json").read_bytes() == b"1"
    assert (user / "b.json").read_bytes() == b"2"
    assert (user / "d" / "a.json").read_bytes() == b"3"
    # a rename into a folder that is there, or not yet, still works
    moved = await http.post("/api/userdata/a.json/move/d%2Fc.json")
    assert moved.status_code == 200 and moved.json() == "d/c.json"
    moved = await http.post(
        "/api/userdata/b.json/move/e%2Ff%2Fb.json", params={"full_info": "true"}
    )
    assert moved.status_code == 200 and moved.json()["path"] == "e/f/b.json"


@pytest.mark.parametrize("body", [b'{"a": NaN}', b'{"a": [Infinity]}', b'{"a": -Infinity}'])
async def test_settings_that_are_not_json_are_refused(http: httpx.AsyncClient, body: bytes) -> None:
    """Python's json reads NaN and Infinity; stored in the settings they made every later
    GET /settings a 500 (and ComfyUI writes them back out, which the editor's JSON.parse
    refuses): comfyrun refuses them with a 400 and keeps the settings as they were."""
    assert (await http.post("/api/settings", json={"kept": 1})).status_code == 200
    assert (await http.post("/api/settings", content=body)).status_code == 400
    assert (await http.post("/api/settings/a", content=body[6:-1])).status_code == 400
    answer = await http.get("/api/settings")
    assert answer.status_code == 200 and answer.json() == {"kept": 1}


async def test_a_settings_file_holding_nan_is_still_read(http: httpx.AsyncClient) -> None:
    """The settings file is also a userdata file: written with a NaN there, GET /settings
    answers it (the NaN as null) rather than a 500, and the editor can save over it."""
    stored = await http.post("/api/userdata/comfy.settings.json", content=b'{"a": NaN, "b": 2}')
    assert stored.status_code == 200
    answer = await http.get("/api/settings")
    assert answer.status_code == 200 and json.loads(answer.text) == {"a": None, "b": 2}
    assert (await http.get("/api/settings/a")).text == "null"
    assert (await http.post("/api/settings/c", json=3)).status_code == 200
    assert (await http.get("/api/settings")).json() == {"a": None, "b": 2, "c": 3}


async def test_model_metadata_is_an_empty_404(http: httpx.AsyncClient) -> None:
    """The editor's api.viewMetadata parses any body of /view_metadata as the model's
    metadata: a JSON error there was shown as metadata. ComfyUI answers a file it has not
    with an empty 404, which the editor reads as none."""
    for prefix in ("", "/api"):
        answer = await http.get(
            f"{prefix}/view_metadata/checkpoints", params={"filename": "a.safetensors"}
        )
        assert answer.status_code == 404 and answer.content == b""


async def test_a_folder_is_moved_with_what_it_holds(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """ComfyUI's move takes any path that exists, a folder too (shutil.move moves it whole):
    comfyrun answered a folder's move 404, as if it were not there. Moved into itself (a 500
    in ComfyUI) or onto a file, it is a 400, and the user's files stay as they were."""
    for name in ("workflows%2Fold%2Fa.json", "workflows%2Fold%2Fsub%2Fb.json", "c.json"):
        assert (await http.post(f"/api/userdata/{name}", content=b"{}")).status_code == 200
    user = tmp_path / "user" / "default"
    refused = await http.post("/api/userdata/workflows%2Fold/move/workflows%2Fold%2Fin")
    assert refused.status_code == 400, refused.text
    onto = await http.post("/api/userdata/workflows%2Fold/move/c.json")
    assert onto.status_code == 400, onto.text
    kept = await http.post(
        "/api/userdata/workflows%2Fold/move/c.json", params={"overwrite": "false"}
    )
    assert kept.status_code == 409, kept.text
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*.json")) == [
        "c.json", "workflows/old/a.json", "workflows/old/sub/b.json"
    ]  # fmt: skip
    moved = await http.post(
        "/api/userdata/workflows%2Fold/move/workflows%2Fnew", params={"full_info": "true"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == "workflows/new"
    listed = await http.get("/api/userdata", params={"dir": "workflows", "recurse": "true"})
    assert sorted(listed.json()) == ["new/a.json", "new/sub/b.json"]
    assert (await http.post("/api/userdata/nowhere/move/x")).status_code == 404
