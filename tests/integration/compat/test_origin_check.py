"""ComfyUI's origin check, by comfyrun on every route of every dialect and on /ws, and by the
emulator as ComfyUI itself: a request to a loopback host from a page of another origin is a
403 with no body (a web page could queue prompts on, and listen to, a local server), and
nothing is queued; the same origin, no origin, or an origin in `allowed_origins` goes on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets
from tests.integration.compat.conftest import Server
from tests.support.api import asgi_app, memory_settings, tiny_workflow
from tests.support.emulator import running_emulator

EVIL = {"Origin": "http://evil.example"}


async def check_refused(url: str, paths: list[tuple[str, str]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        port = url.rsplit(":", 1)[1]
        queued = (await http.get("/queue")).json()
        for method, path in paths:
            answer = await http.request(
                method, path, json={"prompt": tiny_workflow(1)}, headers=EVIL
            )
            assert (answer.status_code, answer.content) == (403, b""), (path, answer.text)
        assert (await http.get("/queue")).json() == queued  # nothing queued
        same = {"Origin": f"http://127.0.0.1:{port}"}
        assert (await http.get("/queue", headers=same)).status_code == 200
        ws_url = url.replace("http://", "ws://") + "/ws?clientId=x"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(ws_url, origin=websockets.Origin("http://evil.example"))
        assert refused.value.response.status_code == 403
        async with websockets.connect(ws_url, origin=websockets.Origin(same["Origin"])) as ws:
            assert b"status" in (await ws.recv()).encode()


async def test_comfyrun_refuses_another_origin_on_loopback(server: Server) -> None:
    paths = [("POST", "/prompt"), ("POST", "/api/prompt"), ("POST", "/api/v2/jobs")]
    paths += [("POST", "/run"), ("GET", "/history"), ("POST", "/upload/image")]
    await check_refused(server.url, paths)


async def test_the_emulator_refuses_another_origin_on_loopback(tmp_path: Path) -> None:
    async with running_emulator(tmp_path) as emu:
        await check_refused(emu.url, [("POST", "/prompt"), ("GET", "/history")])


async def test_an_allowed_origin_goes_on(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, allowed_origins=["http://localhost:3000/"])
    async with asgi_app(settings) as (_, http, _ctx):
        host = {"Host": "localhost:8189"}
        refused = await http.get("/queue", headers=host | {"Origin": "http://localhost:3001"})
        assert refused.status_code == 403
        allowed = await http.get("/queue", headers=host | {"Origin": "http://LOCALHOST:3000"})
        assert allowed.status_code == 200
        assert (await http.get("/queue", headers=host)).status_code == 200  # (no Origin)


async def test_the_public_url_s_origin_goes_on(tmp_path: Path) -> None:
    """Behind a reverse proxy that passes its upstream's Host (127.0.0.1:8189, nginx's
    default), the browser's Origin is the public URL's: set as `public_url`, it goes on."""
    settings = memory_settings(tmp_path, public_url="https://comfy.example.com/")
    async with asgi_app(settings) as (_, http, _ctx):
        proxied = {"Host": "127.0.0.1:8189", "Origin": "https://comfy.example.com"}
        assert (await http.get("/queue", headers=proxied)).status_code == 200
        other = proxied | {"Origin": "https://evil.example"}
        assert (await http.get("/queue", headers=other)).status_code == 403
