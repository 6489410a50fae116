"""ComfyHTTP over aiohttp (the engine every backend is driven with) against a small real
server: answers, statuses, a streamed body, and failures mapped to the client's errors."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from comfyrun.comfy import http as comfy_http
from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyProtocolError,
    ComfyTimeout,
)
from comfyrun.comfy.files import ViewStream
from comfyrun.comfy.http import ComfyHTTP, maybe_sent


async def _prompt(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"echo": body, "ctype": request.headers.get("Content-Type")})


async def _view(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    await response.prepare(request)
    for i in range(int(request.query["n"])):
        await response.write(bytes([i]) * 1000)
    if request.query.get("break"):
        assert request.transport is not None
        request.transport.close()  # cut the body off mid-way (chunked, never finished)
        return response
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)  # far past the client's 0.3 s
    return web.Response()


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/prompt", _prompt)
    app.router.add_get("/view", _view)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/text", _plain)
    app.router.add_get("/list", _json_list)
    app.router.add_get("/boom", _boom)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _plain(request: web.Request) -> web.Response:
    return web.Response(text="not json")


async def _json_list(request: web.Request) -> web.Response:
    return web.json_response([1, 2])


async def _boom(request: web.Request) -> web.Response:
    return web.Response(status=500, text="it broke")


async def test_json_in_and_out(base: str) -> None:
    http = ComfyHTTP(base, timeout=5)
    try:
        reply = await http.request("POST", "/prompt", json={"a": [1, "é"]})
        data = http.json(reply)
        assert data == {"echo": {"a": [1, "é"]}, "ctype": "application/json"}
        assert (reply.status_code, reply.method, reply.path) == (200, "POST", "/prompt")
    finally:
        await http.aclose()


async def test_statuses_and_bodies_map_to_the_clients_errors(base: str) -> None:
    http = ComfyHTTP(base, timeout=5)
    try:
        with pytest.raises(ComfyHTTPError) as info:
            await http.request("GET", "/boom")
        assert info.value.status == 500 and "it broke" in str(info.value)
        assert (await http.request("GET", "/boom", expect=(500,))).text == "it broke"
        with pytest.raises(ComfyProtocolError):
            http.json(await http.request("GET", "/text"))
        with pytest.raises(ComfyProtocolError):
            http.json(await http.request("GET", "/list"))
    finally:
        await http.aclose()


async def test_a_streamed_body_arrives_whole(base: str) -> None:
    http = ComfyHTTP(base, timeout=5)
    try:
        async with http.stream("GET", "/view", params={"n": "50"}) as response:
            stream = ViewStream(response, 4096)
            assert stream.content_type == "image/png"
            body = b"".join([chunk async for chunk in stream])
        assert body == b"".join(bytes([i]) * 1000 for i in range(50))
        with pytest.raises(ComfyHTTPError):
            async with http.stream("GET", "/boom"):
                pass
    finally:
        await http.aclose()


async def test_a_body_cut_off_midway_is_a_connection_error(base: str) -> None:
    http = ComfyHTTP(base, timeout=5)
    try:
        with pytest.raises(ComfyConnectionError):
            async with http.stream("GET", "/view", params={"n": "5", "break": "1"}) as response:
                async for _ in ViewStream(response, 4096):
                    pass
    finally:
        await http.aclose()


async def test_no_answer_in_time_is_a_timeout_that_may_have_been_sent(base: str) -> None:
    http = ComfyHTTP(base, timeout=0.3)
    try:
        with pytest.raises(ComfyTimeout) as info:
            await http.request("GET", "/slow")
        assert maybe_sent(info.value)
    finally:
        await http.aclose()


async def test_nobody_listening_is_a_connection_error_never_sent() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = ComfyHTTP(f"http://127.0.0.1:{port}", timeout=5)
    try:
        with pytest.raises(ComfyConnectionError) as info:
            await http.request("POST", "/prompt", json={})
        assert not maybe_sent(info.value)
    finally:
        await http.aclose()


async def test_a_large_json_answer_is_parsed_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    loads = comfy_http.jsontext.loads

    def recording_loads(raw: bytes) -> Any:
        threads.append(threading.get_ident())
        return loads(raw)

    monkeypatch.setattr(comfy_http.jsontext, "loads", recording_loads)
    small = comfy_http.Reply(200, b'{"a": 1}', "GET", "/system_stats")
    large_body = json.dumps({"n": "x" * comfy_http.LARGE_JSON_BYTES}).encode()
    large = comfy_http.Reply(200, large_body, "GET", "/object_info")
    assert await comfy_http.ComfyHTTP.json_off_loop(small) == {"a": 1}
    assert (await comfy_http.ComfyHTTP.json_off_loop(large))["n"].startswith("x")
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread and threads[1] != loop_thread
    with pytest.raises(ComfyProtocolError):
        await comfy_http.ComfyHTTP.json_off_loop(
            comfy_http.Reply(200, b"x" * comfy_http.LARGE_JSON_BYTES, "GET", "/object_info")
        )
