"""ComfyUI's /object_info from a ready backend, cached: what UI-format conversion and submit-time
validation need to know about node types."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)


class ObjectInfoCache:
    """`await cache.get()` → the object_info of the first backend that answers, or None.

    `urls()` lists candidate backend base URLs, best first. A result is kept for `ttl_s`; a
    failure is remembered for a few seconds so a burst of submissions does not hammer a
    backend that is down.
    """

    def __init__(
        self,
        urls: Callable[[], Sequence[str]],
        *,
        ttl_s: float = 300.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._urls = urls
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._value: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._failed_at = -1e9
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._value is not None and now - self._fetched_at < self._ttl_s:
            return self._value
        async with self._lock:
            now = time.monotonic()
            if self._value is not None and now - self._fetched_at < self._ttl_s:
                return self._value
            if now - self._failed_at < 2.0:
                return self._value
            urls = list(self._urls())
            if not urls:  # nothing ready yet: ask again next time
                return self._value
            value = await self._fetch(urls)
            if value is None:
                self._failed_at = now
                return self._value  # a stale answer beats none
            self._value, self._fetched_at = value, now
            return value

    async def _fetch(self, urls: Sequence[str]) -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as http:
            for url in urls:
                try:
                    resp = await http.get(f"{url.rstrip('/')}/object_info")
                    resp.raise_for_status()
                    data = resp.json()
                except (httpx.HTTPError, ValueError) as exc:
                    log.info("object_info from %s failed: %s", url, exc)
                    continue
                if isinstance(data, dict) and data:
                    return data
        return None


__all__ = ["ObjectInfoCache"]
