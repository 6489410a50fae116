"""GET endpoints, the /api prefix, uploads and /view replayed from the transcripts."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import aiohttp
from PIL import Image
from tests.support.emulator import HISTORY_MAPS, assert_same_shape, wait_history

from comfyrun.comfy.emulator import Emulator


def _png(color: tuple[int, int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def _upload(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes | None,
    filename: str = "capture_in.png",
    **fields: str,
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    if data is not None:
        form.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    if data is None and not fields:
        form.add_field("nothing", "here")
    async with session.post(f"{url}/upload/image", data=form) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_get_endpoints_match_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("get_endpoints")
    graph = transcript("ws_success_run")["post_prompt"]["request"]["json"]["prompt"]
    for color in (1, 2):
        graph["1"]["inputs"]["color"] = color
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": graph, "client_id": "g"}
        ) as resp:
            await wait_history(session, emu.url, (await resp.json())["prompt_id"])
    for path, case in rec.items():
        async with session.get(f"{emu.url}{path}") as resp:
            assert resp.status == case["status"], path
            if case["status"] != 200:
                assert await resp.read() == b""
                continue
            assert resp.headers["Content-Type"] == case["headers"]["Content-Type"], path
            body = await resp.json()
        if path.startswith("/history"):
            success = transcript("history")["by_id_success"]["body"]
            assert len(body) == len(case["body"]), path
            for prompt_id, entry in body.items():
                assert_same_shape({prompt_id: entry}, success, maps=HISTORY_MAPS)
            continue
        maps = ("$",) if path == "/internal/folder_paths" else ()
        if path in ("/extensions", "/experiment/models"):
            assert body and all(isinstance(x, type(case["body"][0])) for x in body)
            continue
        assert_same_shape(body, case["body"], maps=maps)
        if path.startswith("/object_info") or path in (
            "/models",
            "/models/checkpoints",
            "/features",
            "/settings",
            "/users",
            "/workflow_templates",
            "/embeddings",
        ):
            assert body == case["body"], path


async def test_api_prefix_mirrors_everything_but_internal(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("api_prefix")
    for path, case in rec.items():
        if not path.startswith("/") or "ws" in path:
            continue
        async with session.get(f"{emu.url}{path}") as plain:
            plain_status, plain_body = plain.status, await plain.read()
        async with session.get(f"{emu.url}/api{path}") as api:
            api_status, api_body = api.status, await api.read()
        assert (plain_status, api_status) == (case["plain_status"], case["api_status"]), path
        if case["same_body"] and path != "/system_stats":
            assert plain_body == api_body, path
    ws = await session.ws_connect(f"{emu.url}/api/ws?clientId=apiprefix")
    try:
        first = await ws.receive_json(timeout=10)
    finally:
        await ws.close()
    recorded = rec["/ws (as /api/ws)"]["first_message"]
    assert first == recorded


async def test_uploads_match_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("upload_image")
    red, blue = _png((255, 0, 0, 255)), _png((0, 0, 255, 255))
    steps: list[tuple[str, tuple[int, Any]]] = [
        ("basic", await _upload(session, emu.url, red)),
        ("same_name_no_overwrite_different_content", await _upload(session, emu.url, blue)),
        ("same_name_same_content_again", await _upload(session, emu.url, blue)),
        ("overwrite_true", await _upload(session, emu.url, blue, overwrite="true")),
        (
            "subfolder_input",
            await _upload(session, emu.url, red, "sub_in.png", subfolder="jobs/abc"),
        ),
        ("type_temp", await _upload(session, emu.url, red, "tmp_in.png", type="temp")),
        (
            "path_traversal_subfolder",
            await _upload(session, emu.url, red, "x.png", subfolder="../../etc"),
        ),
        ("missing_image_field", await _upload(session, emu.url, None, subfolder="x")),
        ("non_image_bytes", await _upload(session, emu.url, b"not an image at all", "garbage.png")),
    ]
    for name, (status, body) in steps:
        assert status == rec[name]["status"], name
        if status == 200:
            assert body == rec[name]["body"], name
        else:
            assert body == rec[name]["body_text"], name
    assert (emu.config.input_dir / "capture_in.png").read_bytes() == blue
    assert (emu.config.input_dir / "capture_in (1).png").read_bytes() == blue
    assert (emu.config.temp_dir / "tmp_in.png").is_file()
    status, _ = await _upload(session, emu.url, red, "../evil.png")
    assert status in (200, 400)
    assert not (emu.config.input_dir.parent / "evil.png").exists()


async def test_view_matches_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("view")
    await _upload(session, emu.url, _png((10, 200, 10, 128)), "sub_in.png", subfolder="jobs/abc")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "jobs/abc/sub_in.png"}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "bilinear",
                "width": 16,
                "height": 12,
                "crop": "disabled",
            },
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "jobs/scaled"},
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    async with session.post(f"{emu.url}/prompt", json={"prompt": graph}) as resp:
        entry = await wait_history(session, emu.url, (await resp.json())["prompt_id"])
    temp_name = entry["outputs"]["4"]["images"][0]["filename"]
    saved = entry["outputs"]["3"]["images"][0]
    assert saved["subfolder"] == "jobs"
    for name, case in rec.items():
        if not isinstance(case, dict) or "request" not in case:
            continue
        path = (
            case["request"]["path"]
            .replace("scaled_00006_.png", saved["filename"])
            .replace("ComfyUI_temp_ejojj_00001_.png", temp_name)
        )
        async with session.get(f"{emu.url}{path}") as resp:
            body = await resp.read()
            assert resp.status == case["status"], name
            if case["status"] != 200:
                assert body == b""
                continue
            assert resp.headers["Content-Type"] == case["headers"]["Content-Type"], name
            filename = path.split("filename=")[1].split("&")[0].removesuffix(" [input]")
            assert resp.headers["Content-Disposition"] == f'filename="{filename}"', name
            with Image.open(io.BytesIO(body)) as img:
                img.load()
                if "channel=rgb" in path:
                    assert img.mode == "RGB"
                if "channel=a" in path:
                    assert img.mode == "RGBA"


async def test_node_definitions_match_the_captured_object_info(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    trimmed = transcript("object_info_trimmed")
    for name, definition in trimmed.items():
        async with session.get(f"{emu.url}/api/object_info/{name}") as resp:
            body = await resp.json()
        if name in ("LoadImage", "LoadImageMask"):
            # their combo lists the input folder, empty here
            assert_same_shape(body[name], definition)
            continue
        assert body == {name: definition}, name
    async with session.get(f"{emu.url}/object_info") as resp:
        everything = await resp.json()
    assert (
        len(everything) >= 477
        and everything["KSampler"] == transcript("object_info_KSampler")["KSampler"]
    )


async def test_websocket_connect_initial_message(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_connect_initial")
    client_id = rec["url"].split("clientId=")[1]
    async with session.ws_connect(f"{emu.url}{rec['url']}") as ws:
        first = await ws.receive_json(timeout=10)
    assert first == {"type": rec["messages"][0]["type"], "data": rec["messages"][0]["data"]}
    assert first["data"]["sid"] == client_id
    async with session.ws_connect(f"{emu.url}/ws") as ws:
        anonymous = await ws.receive_json(timeout=10)
    assert_same_shape(anonymous, first)
    sid = anonymous["data"]["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0


async def test_a_mask_s_original_is_an_output_unless_its_type_says_otherwise(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """ComfyUI's /upload/mask looks for `original_ref` without a type among the outputs
    (server.py: `original_ref.get("type", "output")`); the emulator looked among the inputs."""
    emu.config.output_dir.mkdir(parents=True, exist_ok=True)
    (emu.config.output_dir / "drawn_on.png").write_bytes(_png((0, 200, 0, 255)))
    form = aiohttp.FormData()
    form.add_field("image", _png((0, 0, 0, 128)), filename="mask.png", content_type="image/png")
    form.add_field("original_ref", '{"filename": "drawn_on.png"}')
    async with session.post(f"{emu.url}/upload/mask", data=form) as resp:
        assert resp.status == 200, await resp.text()
        saved = await resp.json()
    with Image.open(emu.config.input_dir / saved["name"]) as img:
        assert img.getpixel((0, 0))[:3] == (0, 200, 0)  # the output's picture, the mask's alpha
