"""The HTTP side of one ComfyUI server: one pooled client, a timeout on every call, and transport
failures mapped to the client's typed errors.

The client is aiohttp's (what ComfyUI itself serves with): on the hot path, where every job
makes two or three requests to its backend, it costs about a quarter of httpx's CPU per
request (httpx + httpcore + h11 in pure Python, and the head and the body of a POST written to
the socket apart). With `transport` (an httpx transport, e.g. `httpx.MockTransport`), requests
go through httpx instead: the seam unit tests drive the client's HTTP side through.

Answers are read whole into a `Reply` (small JSON bodies); `/view` is streamed (`stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx
from multidict import CIMultiDict

from comfyrun import jsontext
from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyProtocolError,
    ComfyTimeout,
)

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """One whole answer."""

    status_code: int
    content: bytes
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsontext.loads(self.content)


class ReplyStream(Protocol):
    """An answer whose body is read as it is consumed."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self, chunk_size: int) -> AsyncIterator[bytes]: ...


#: A JSON answer at least this long is parsed in a worker thread (`ComfyHTTP.json_off_loop`).
LARGE_JSON_BYTES = 256 * 1024


class ComfyHTTP:
    """`request` raises `ComfyTimeout`, `ComfyConnectionError` or, for a status not in
    `expect`, `ComfyHTTPError`; `json` raises `ComfyProtocolError` for a body that is not a
    JSON object. Proxies from the environment are ignored: backends are addressed directly.
    `timeout` bounds connecting and every wait for data, not a whole (streamed) answer.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._engine: _Engine = (
            _Httpx(self.base_url, timeout, transport, max_connections, headers)
            if transport is not None
            else _Aiohttp(self.base_url, timeout, max_connections, headers)
        )

    async def aclose(self) -> None:
        await self._engine.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Reply:
        try:
            reply = await self._engine.request(method, path, json, content, headers, params)
        except _TIMEOUTS as exc:
            raise ComfyTimeout(f"{method} {path} on {self.base_url} timed out") from exc
        except _FAILURES as exc:
            raise ComfyConnectionError(
                f"{method} {path} on {self.base_url} failed: {exc!r}"
            ) from exc
        if reply.status_code not in expect:
            raise ComfyHTTPError(
                f"{method} {path} on {self.base_url} answered {reply.status_code}: "
                f"{reply.text[:200]!r}",
                status=reply.status_code,
                method=method,
                path=path,
            )
        return reply

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[ReplyStream]:
        """An answer whose body is read as it is consumed; only a 200 is yielded."""
        opened = self._engine.stream(method, path, params)
        try:
            response = await opened.__aenter__()
        except _TIMEOUTS as exc:
            raise ComfyTimeout(f"{method} {path} on {self.base_url} timed out") from exc
        except _FAILURES as exc:
            raise ComfyConnectionError(
                f"{method} {path} on {self.base_url} failed: {exc!r}"
            ) from exc
        try:
            if response.status_code != 200:
                raise ComfyHTTPError(
                    f"{method} {path} {dict(params or {})} on {self.base_url} answered "
                    f"{response.status_code}",
                    status=response.status_code,
                    method=method,
                    path=path,
                )
            yield response
        finally:
            with contextlib.suppress(*_TIMEOUTS, *_FAILURES):
                await opened.__aexit__(None, None, None)

    @staticmethod
    async def json_off_loop(response: Reply) -> JSON:
        """`json`, in a worker thread when the body is large (a real ComfyUI's /object_info,
        with custom nodes, is several MB: tens to hundreds of ms the loop would serve nothing)."""
        if len(response.content) < LARGE_JSON_BYTES:
            return ComfyHTTP.json(response)
        return await asyncio.to_thread(ComfyHTTP.json, response)

    @staticmethod
    def json(response: Reply) -> JSON:
        try:
            data = response.json()
        except ValueError as exc:
            raise ComfyProtocolError(
                f"{response.method} {response.path} answered non-JSON"
            ) from exc
        if not isinstance(data, dict):
            raise ComfyProtocolError(f"{response.method} {response.path} answered a non-object")
        return data


def maybe_sent(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` may still have reached the server."""
    if isinstance(exc.__cause__, _NOT_SENT):
        return False
    return isinstance(exc, ComfyTimeout | ComfyConnectionError | asyncio.CancelledError)


def never_sent(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` certainly never reached the server (its
    connection could not be made)."""
    return isinstance(exc.__cause__, _NOT_SENT)


def stream_errors(exc: BaseException) -> ComfyTimeout | ComfyConnectionError | None:
    """The client's error for a failure while a streamed body is read, if it is one."""
    if isinstance(exc, _TIMEOUTS):
        return ComfyTimeout(f"reading the answer timed out: {exc!r}")
    if isinstance(exc, _FAILURES):
        return ComfyConnectionError(f"reading the answer failed: {exc!r}")
    return None


# aiohttp.ServerTimeoutError is a ClientError and a TimeoutError: timeouts are looked at first
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, httpx.TimeoutException)
_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, httpx.TransportError)
#: Failures before the request could be written: it never reached the server.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


class _Engine(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        json: Any,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> Reply: ...

    def stream(
        self, method: str, path: str, params: Mapping[str, str] | None
    ) -> contextlib.AbstractAsyncContextManager[ReplyStream]: ...

    async def aclose(self) -> None: ...


class _Aiohttp:
    def __init__(
        self,
        base_url: str,
        timeout: float,
        max_connections: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._base = base_url
        self._session = aiohttp.ClientSession(
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            connector=aiohttp.TCPConnector(limit=max_connections),
            trust_env=False,
            # ComfyUI's JSON is read as bytes and parsed here, its /view bytes as they are
            auto_decompress=True,
        )

    async def request(
        self,
        method: str,
        path: str,
        json: Any,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> Reply:
        data: Any = content
        sent_headers = CIMultiDict(headers or {})
        if json is not None:
            data = jsontext.dumps(json).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        async with self._session.request(
            method, self._base + path, data=data, headers=sent_headers, params=params
        ) as response:
            body = await response.read()
            return Reply(response.status, body, method, path, response.headers)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, params: Mapping[str, str] | None
    ) -> AsyncIterator[ReplyStream]:
        async with self._session.request(method, self._base + path, params=params) as response:
            yield _Stream(response.status, response.headers, response.content.iter_chunked)

    async def aclose(self) -> None:
        await self._session.close()


@dataclass(frozen=True, slots=True)
class _Stream:
    """A streamed answer of either engine: its status, headers and chunks of a given size."""

    status_code: int
    headers: Mapping[str, str]
    chunks: Callable[[int], AsyncIterator[bytes]]

    def aiter_bytes(self, chunk_size: int) -> AsyncIterator[bytes]:
        return self.chunks(chunk_size)


class _Httpx:
    def __init__(
        self,
        base_url: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        max_connections: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            trust_env=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        json: Any,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> Reply:
        response = await self._client.request(
            method, path, json=json, content=content, headers=headers, params=params
        )
        return Reply(response.status_code, response.content, method, path, response.headers)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, params: Mapping[str, str] | None
    ) -> AsyncIterator[ReplyStream]:
        request = self._client.build_request(method, path, params=params)
        response = await self._client.send(request, stream=True)
        try:
            yield _Stream(response.status_code, response.headers, response.aiter_bytes)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = ["ComfyHTTP", "Reply", "ReplyStream", "maybe_sent", "never_sent", "stream_errors"]
