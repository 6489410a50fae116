"""Request limits over real sockets: every dialect refuses an oversized body (413) before reading
it, counts chunked bodies (413), times out stalled bodies (408) and closes their connection,
answers in its own error shape; uploads have their own limit; headers are capped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from comfyrun.api.app import create_app
from comfyrun.cli.server import serving_app
from comfyrun.config import Settings
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.memory import MemoryStore

LIMIT = 4096
JSON_HEADERS = {"content-type": "application/json"}
UPLOAD_LIMIT = 256 * 1024

#: A body route of each dialect → a predicate on the refusal body (its dialect's error shape).
BODY_ROUTES: dict[str, str] = {
    "/api/v2/jobs": "v2",
    "/api/v2/admin/cleanup": "v2",
    "/prompt": "comfyui",
    "/api/prompt": "comfyui",
    "/prompt_sync": "comfyui",
    "/run": "runpod",
    "/runsync": "runpod",
    "/v2/ep-1/runsync": "runpod",
    "/v2/ep-1/run": "runpod",
    "/api/v1/tasks": "runpod",
}


def assert_shape(dialect: str, body: Any, code: str) -> None:
    if dialect == "v2":
        assert body["error"]["code"] == code, body
        assert body["error"]["message"]
    elif dialect == "comfyui":
        assert body["error"]["type"] == code, body
        assert isinstance(body["error"]["message"], str)
        assert body["node_errors"] == {}
    else:
        assert body["code"] == code, body
        assert isinstance(body["error"], str)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    settings = Settings(
        data_dir=tmp_path,
        db_url="memory://",
        api_keys=[],
        max_request_bytes=LIMIT,
        max_upload_bytes=UPLOAD_LIMIT,
        body_idle_timeout_s=0.5,
        body_timeout_s=30.0,
        max_header_bytes=8192,
    )
    app = create_app(settings, store=MemoryStore(), storage=MemoryOutputStorage())
    async with serving_app(
        app, "127.0.0.1", 0, grace_s=2, max_header_bytes=8192, header_timeout_s=1.0
    ) as base:
        yield base


async def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """Send `head` (+ `body`) on a fresh connection and read the answer until the server
    closes the connection: a refusal must close it, or this times out."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        async with asyncio.timeout(30):
            raw = await reader.read(-1)  # to EOF: the server closed the connection
    finally:
        await close(writer)
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode("latin-1")


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a test's connection and wait until its socket is (a transport left closing when
    the test's event loop ends is a ResourceWarning, an error in this suite, wherever the
    garbage collector happens to find it)."""
    writer.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(5):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer on a kept-alive connection: its head (returned) and its body (read past)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


def head(path: str, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(("path", "dialect"), BODY_ROUTES.items())
async def test_a_declared_oversized_body_is_refused_before_it_is_sent(
    url: str, path: str, dialect: str
) -> None:
    # 100 MB announced, a few bytes sent: the answer comes at once, not after the body
    status, headers, body = await raw_request(
        url, head(path, {"Content-Length": "100000000"}), b"{}"
    )
    assert status == 413
    assert headers.get("connection") == "close"
    assert_shape(dialect, body, "request_too_large")


#: Routes that read their body (POST /api/v2/admin/cleanup answers without reading it).
READING_ROUTES = {p: d for p, d in BODY_ROUTES.items() if p != "/api/v2/admin/cleanup"}


@pytest.mark.parametrize(("path", "dialect"), READING_ROUTES.items())
async def test_a_stalled_body_times_out_with_408_and_the_connection_is_closed(
    url: str, path: str, dialect: str
) -> None:
    status, headers, body = await raw_request(url, head(path, {"Content-Length": "1000"}), b"{")
    assert status == 408
    assert headers.get("connection") == "close"
    assert_shape(dialect, body, "request_timeout")


@pytest.mark.parametrize(("path", "dialect"), READING_ROUTES.items())
async def test_an_oversized_chunked_body_is_413_not_a_parse_error(
    url: str, path: str, dialect: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"workflow": {}, "pad": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert_shape(dialect, r.json(), "request_too_large")


async def test_bodies_under_the_limit_still_work(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/api/v2/jobs", json={"workflow": "not an object"})
        assert r.status_code == 422  # read, parsed and judged: not refused by the limit
        r = await client.post("/prompt", json={"nothing": 1})
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "no_prompt"


async def test_uploads_have_their_own_larger_limit(url: str) -> None:
    payload = b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMIT * 4)  # over the JSON limit, under uploads'
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/upload/image", files={"image": ("a.png", payload, "image/png")})
        assert r.status_code != 413, r.text
        r = await client.post("/api/v2/assets", files={"file": ("a.bin", payload)})
        assert r.status_code != 413, r.text
    declared = {"Content-Length": str(UPLOAD_LIMIT * 2), "Content-Type": "multipart/form-data"}
    for path, dialect in (("/upload/image", "comfyui"), ("/api/v2/assets", "v2")):
        status, _, body = await raw_request(url, head(path, declared), b"--x")
        assert status == 413
        assert_shape(dialect, body, "request_too_large")


async def test_oversized_headers_are_refused_and_the_connection_closed(url: str) -> None:
    # over the limit but complete: the app refuses it (431) in the dialect's shape
    request = head("/prompt", {"X-Big": "a" * 10_000, "Content-Length": "2"})
    status, headers, body = await raw_request(url, request, b"{}")
    assert status == 431
    assert headers.get("connection") == "close"
    assert_shape("comfyui", body, "headers_too_large")
    # far over it, still arriving: the HTTP server stops buffering and refuses it
    # (it may reset the connection before the client reads the 400: either way, refused)
    request = "GET /api/v2/health HTTP/1.1\r\nHost: test\r\nX-Big: " + "a" * 200_000
    try:
        status, _, _ = await raw_request(url, request)
    except ConnectionResetError:
        status = 400
    assert status in (400, 431)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/api/v2/health")).status_code == 200


async def test_a_head_trickling_in_past_the_limit_is_refused(url: str) -> None:
    """The HTTP server counts a head's bytes across reads: small pieces that add up past the
    limit before the head ends are refused and the connection closed."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET /api/v2/health HTTP/1.1\r\nHost: test\r\n")
        with contextlib.suppress(ConnectionError):  # refused before the last piece: fine
            for _ in range(40):  # 40 x 1 KiB, far past the 8 KiB limit, never ending the head
                writer.write(b"X-Piece: " + b"a" * 1024 + b"\r\n")
                await writer.drain()
        async with asyncio.timeout(30):
            refused = await reader.read(-1)  # the server closed the connection
    except ConnectionResetError:
        refused = b"HTTP/1.1 400"  # closed before the client read the answer: refused all the same
    finally:
        await close(writer)
    assert refused.startswith(b"HTTP/1.1 400"), refused[:100]


async def test_heads_under_the_limit_on_one_connection_all_pass(url: str) -> None:
    """The count starts again with every request: 6 KiB heads one after another on one
    kept-alive connection (together far over the limit) are all answered."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        for _ in range(5):
            head = "GET /api/v2/health HTTP/1.1\r\nHost: test\r\nX-Pad: " + "p" * 6000
            writer.write(head.encode() + b"\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(30):
                answer = await read_answer(reader)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        await close(writer)


async def test_a_head_that_never_ends_times_out(url: str) -> None:
    """A slow-loris client (a head a few bytes at a time, well under the size limit) gets 408
    once header_timeout_s (1 s here) has passed since the head's first byte, and is closed."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET /api/v2/health HTTP/1.1\r\nHost: test\r\n")
        await writer.drain()
        answer = b""
        async with asyncio.timeout(30):
            while not reader.at_eof():
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X-Slow: 1\r\n")  # keeps the head alive, never ends it
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(1024), 0.2)
    finally:
        await close(writer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"connection: close" in answer.lower()
    # a healthy client on another connection is answered all along
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/api/v2/health")).status_code == 200


async def _idle_connection_closed(url: str, idle_s: float) -> bool:
    """One request on a kept-alive connection, then `idle_s` idle: True when the server has
    closed the connection by then (EOF), False when it still answers a second request."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    get = b"GET /api/v2/health HTTP/1.1\r\nHost: test\r\n\r\n"
    try:
        for _ in range(2):
            writer.write(get)
            await writer.drain()
            async with asyncio.timeout(10):
                head = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.sleep(idle_s)
            if reader.at_eof() or (await _peek_eof(reader)):
                return True
        return False
    finally:
        await close(writer)


async def _peek_eof(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.05):
            return await reader.read(1) == b""
    return False


@pytest.mark.parametrize(("keep_alive_s", "closed"), [(1, True), (8, False)])
async def test_idle_kept_alive_connections_close_after_keep_alive_s(
    tmp_path: Path, keep_alive_s: int, closed: bool
) -> None:
    from comfyrun.cli.server import running_server

    settings = Settings(data_dir=tmp_path, db_url="memory://", port=0, keep_alive_s=keep_alive_s)
    async with running_server(settings) as base:
        assert await _idle_connection_closed(base, 2.0) is closed


def test_connections_outlive_the_idle_timeouts_of_proxies_and_clients() -> None:
    # nginx and cloud load balancers keep idle upstream connections 60 s, httpx 5 s: the server
    # must not close first (uvicorn's own default, 5 s, raced httpx's)
    assert Settings().keep_alive_s > 60


class Told(logging.Handler):
    """Sets `seen` once a record holding `words` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__(logging.INFO)
        self.words = words
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.seen.set()


#: The body routes whose body comfyrun reads itself (the others are FastAPI's: a body cut short
#: there is a 400 nobody reads, logged as nothing).
OWN_BODY_ROUTES = [p for p, dialect in BODY_ROUTES.items() if dialect != "v2" and "tasks" not in p]


@pytest.mark.parametrize("path", OWN_BODY_ROUTES)
async def test_a_client_leaving_mid_body_is_no_error(
    url: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped connection, a client given up: the request ends without an error logged (it
    was an unhandled one, with two tracebacks), and the server goes on serving."""
    caplog.set_level(logging.INFO)
    told = Told("left before its body")
    logging.getLogger("comfyrun.api.errors").addHandler(told)
    try:
        parts = urlsplit(url)
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        fields = {"Content-Length": "1000", "Content-Type": "application/json"}
        lines = [f"POST {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in fields.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"prompt": ')
        await writer.drain()
        await close(writer)
        async with asyncio.timeout(10):
            await told.seen.wait()
    finally:
        logging.getLogger("comfyrun.api.errors").removeHandler(told)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).status_code == 200


#: Routes that read a JSON body (admin/cleanup takes its parameters from the query).
JSON_BODY_ROUTES = [p for p in BODY_ROUTES if p != "/api/v2/admin/cleanup"]


@pytest.mark.parametrize("path", [*JSON_BODY_ROUTES, "/settings", "/settings/Comfy.X"])
async def test_json_nested_too_deeply_is_answered_as_bad_json(url: str, path: str) -> None:
    """Deeper than the JSON reader goes (1,024 levels): each route answers what it answers
    any text that is not JSON, in its dialect's shape (it was a 500: the fallback reader's
    RecursionError)."""
    async with httpx.AsyncClient(base_url=url) as client:
        bad = await client.post(path, content=b"{nope", headers=JSON_HEADERS)
        deep = await client.post(path, content=b"[" * 1_500 + b"]" * 1_500, headers=JSON_HEADERS)
    assert 400 <= bad.status_code < 500, bad.text
    assert deep.status_code == bad.status_code, deep.text
    if bad.headers.get("content-type", "").startswith("application/json"):
        assert deep.json().keys() == bad.json().keys()
    else:  # (the editor's settings answer in plain text, as ComfyUI does)
        assert deep.content == bad.content


@pytest.mark.parametrize(
    ("method", "path", "headers", "dialect", "status", "code"),
    [
        # a body Starlette cannot parse, on a route whose body FastAPI reads
        (
            "POST",
            "/upload/image",
            {"content-type": "multipart/form-data"},
            "comfyui",
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/upload/mask",
            {"content-type": "multipart/form-data"},
            "comfyui",
            400,
            "invalid_request",
        ),
        # a method the route does not take
        ("PUT", "/prompt", {}, "comfyui", 405, "method_not_allowed"),
        ("PUT", "/run", {}, "runpod", 405, "method_not_allowed"),
        ("PUT", "/api/v2/jobs", {}, "v2", 405, "method_not_allowed"),
    ],
)
async def test_errors_no_route_answers_itself_come_in_the_routes_dialect(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    dialect: str,
    status: int,
    code: str,
) -> None:
    """Raised before the route's own code runs (Starlette's form parser, the router), these
    were answered in the v2 API's shape on every route."""
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.request(method, path, content=b"garbage", headers=headers)
    assert answer.status_code == status, answer.text
    assert_shape(dialect, answer.json(), code)
