"""A local HTTP server (aiohttp, 127.0.0.1, free port) that serves model files and counts the
requests for each, so tests can tell whether a model was downloaded again."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class ModelServer:
    url: str
    files: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)
    #: while cleared, downloads wait (to line up concurrent requests)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    #: set by every request
    requested: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def model_server(files: dict[str, bytes]) -> AsyncIterator[ModelServer]:
    """Serves `/<name>` for each entry of `files` as application/octet-stream."""
    server = ModelServer(url="", files=files)
    server.gate.set()

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in server.files:
            raise web.HTTPNotFound()
        server.hits[name] += 1
        server.requested.set()
        await server.gate.wait()
        return web.Response(body=server.files[name], content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


__all__ = ["ModelServer", "model_server"]
