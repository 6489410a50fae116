"""A local HTTP server (aiohttp, 127.0.0.1, free port) that URL inputs are fetched from."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from tests.support.media import BIG, JPEG, PNG


async def _photo(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def _attachment(request: web.Request) -> web.Response:
    return web.Response(
        body=JPEG,
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="../cat.jpg"'},
    )


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"b" * BIG, content_type="application/octet-stream")


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for _ in range(BIG // 65536):
            await response.write(b"v" * 65536)
    except ConnectionError:  # the client gave up, as it should
        pass
    return response


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html></html>", content_type="text/html")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.Response(body=PNG, content_type="image/png")


async def _stall(request: web.Request) -> web.StreamResponse:
    """Answers, sends the first bytes of its body, then nothing (a hung download)."""
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Content-Length": "1000000"}
    )
    await response.prepare(request)
    await response.write(b"s" * 1000)
    await asyncio.sleep(10)
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


async def _loop(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


@pytest.fixture
async def media_server() -> AsyncIterator[str]:
    """Base URL of a server with /photo.png, /attachment, /big, /big-chunked, /page.html, /slow,
    /stall, /redirect?to=…, /loop."""
    app = web.Application()
    app.router.add_get("/photo.png", _photo)
    app.router.add_get("/attachment", _attachment)
    app.router.add_get("/big", _big)
    app.router.add_get("/big-chunked", _big_chunked)
    app.router.add_get("/page.html", _html)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/stall", _stall)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/loop", _loop)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
