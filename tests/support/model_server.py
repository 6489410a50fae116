"""A local HTTP server (aiohttp, 127.0.0.1, free port) that serves model files and counts the
requests for each, so tests can tell whether a model was downloaded again.

It answers as a real model host does: a strong `ETag` (from the bytes) and a `Last-Modified`
(when the file last changed: assign `server.files[name]` through `server.put`), `Range`
requests (206, honouring `If-Range`), conditional GETs (`If-None-Match`, `If-Modified-Since`:
304). Tests make it misbehave with `server.faults[name]`: a list of `Fault`s, one taken per
request (an HTTP status, with a Retry-After; or a body cut after some bytes)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """How one request goes wrong: answered with `status` (and `retry_after`), or its body
    (the whole of it announced) cut after `cut_after` bytes, the connection dropped, or
    stalled after `stall_after` bytes."""

    status: int | None = None
    retry_after: str | None = None
    cut_after: int | None = None
    #: once this request is answered (or cut), the file's bytes become these
    change_to: bytes | None = None
    #: the body stops after this many bytes, the connection left open (a stalled download)
    stall_after: int | None = None


@dataclass
class ModelServer:
    url: str
    files: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)
    #: while cleared, downloads wait (to line up concurrent requests)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    #: set by every request
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: per file, what its next requests do wrong (one Fault a request, first first)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    #: whether Range requests are honoured (False: the whole file, 200, as some hosts do)
    ranges: bool = True
    #: whether ETag / Last-Modified are sent
    validators: bool = True
    #: every request's headers worth a look, in order: (file, {header: value})
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: when each file last changed (Last-Modified)
    modified: dict[str, float] = field(default_factory=dict)

    def put(self, name: str, content: bytes) -> None:
        """Change (or add) a file: a new ETag, and a Last-Modified later than the last one."""
        self.files[name] = content
        self.modified[name] = max(time.time(), self.modified.get(name, 0.0) + 1.0)

    def fail(self, name: str, *faults: Fault) -> None:
        self.faults.setdefault(name, []).extend(faults)

    def etag(self, name: str) -> str:
        return '"' + hashlib.sha256(self.files[name]).hexdigest()[:24] + '"'

    def last_modified(self, name: str) -> str:
        return formatdate(int(self.modified.setdefault(name, time.time() - 60)), usegmt=True)


_LOOKED_AT = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")


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
        looked_at = {k: request.headers[k] for k in _LOOKED_AT if k in request.headers}
        server.requests.append((name, looked_at))
        server.requested.set()
        await server.gate.wait()
        pending = server.faults.get(name) or []
        fault = pending.pop(0) if pending else None
        if fault is not None and fault.status is not None:
            if fault.change_to is not None:
                server.put(name, fault.change_to)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.Response(status=fault.status, text="try later", headers=headers)
        body = server.files[name]
        headers = {"Accept-Ranges": "bytes"} if server.ranges else {}
        if server.validators:
            headers["ETag"] = server.etag(name)
            headers["Last-Modified"] = server.last_modified(name)
            if _not_modified(server, name, request):
                return web.Response(status=304, headers=headers)
        status, start = 200, 0
        wanted = request.headers.get("Range", "")
        if server.ranges and wanted.startswith("bytes=") and _if_range_holds(server, name, request):
            first = int(wanted.removeprefix("bytes=").split("-", 1)[0] or 0)
            if first >= len(body):
                return web.Response(
                    status=416, headers={**headers, "Content-Range": f"bytes */{len(body)}"}
                )
            status, start = 206, first
            headers["Content-Range"] = f"bytes {first}-{len(body) - 1}/{len(body)}"
        part = body[start:]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/octet-stream"
        response.content_length = len(part)
        await response.prepare(request)
        if fault is not None and fault.stall_after is not None:
            await response.write(part[: fault.stall_after])
            await asyncio.sleep(3600)  # until the client gives up (or the server stops)
        if fault is not None and fault.cut_after is not None:
            await response.write(part[: fault.cut_after])
            await asyncio.sleep(0.05)
            if fault.change_to is not None:
                server.put(name, fault.change_to)
            assert request.transport is not None
            request.transport.abort()  # the connection drops mid-body
            return response
        await response.write(part)
        await response.write_eof()
        return response

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


def _not_modified(server: ModelServer, name: str, request: web.Request) -> bool:
    tags = request.headers.get("If-None-Match")
    if tags is not None:
        return server.etag(name) in [t.strip() for t in tags.split(",")] or tags.strip() == "*"
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        return int(server.modified[name]) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def _if_range_holds(server: ModelServer, name: str, request: web.Request) -> bool:
    validator = request.headers.get("If-Range")
    if validator is None:
        return True
    if validator.startswith('"'):
        return validator == server.etag(name)
    return validator == server.last_modified(name)


__all__ = ["Fault", "ModelServer", "model_server"]
