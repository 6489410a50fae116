"""The HTTP side of one ComfyUI server: one pooled httpx client, a timeout on every call, and
transport failures mapped to the client's typed errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import httpx

from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyProtocolError,
    ComfyTimeout,
)

JSON = dict[str, Any]


class ComfyHTTP:
    """`request` raises `ComfyTimeout`, `ComfyConnectionError` or, for a status not in
    `expect`, `ComfyHTTPError`; `json` raises `ComfyProtocolError` for a body that is not a
    JSON object. Proxies from the environment are ignored: backends are addressed directly.
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
        self.base_url = base_url
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

    async def aclose(self) -> None:
        await self._client.aclose()

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
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method, path, json=json, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException as exc:
            raise ComfyTimeout(f"{method} {path} on {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise ComfyConnectionError(
                f"{method} {path} on {self.base_url} failed: {exc!r}"
            ) from exc
        if response.status_code not in expect:
            raise ComfyHTTPError(
                f"{method} {path} on {self.base_url} answered {response.status_code}: "
                f"{response.text[:200]!r}",
                status=response.status_code,
                method=method,
                path=path,
            )
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """A response whose body is read as it is consumed; only a 200 is yielded."""
        request = self._client.build_request(method, path, params=params)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ComfyTimeout(f"{method} {path} on {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
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
            await response.aclose()

    @staticmethod
    def json(response: httpx.Response) -> JSON:
        try:
            data = response.json()
        except ValueError as exc:
            raise ComfyProtocolError(
                f"{response.request.method} {response.request.url.path} answered non-JSON"
            ) from exc
        if not isinstance(data, dict):
            raise ComfyProtocolError(
                f"{response.request.method} {response.request.url.path} answered a non-object"
            )
        return data


def maybe_sent(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` may still have reached the server."""
    if isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return False
    return isinstance(exc, ComfyTimeout | ComfyConnectionError | asyncio.CancelledError)


__all__ = ["ComfyHTTP", "maybe_sent"]
