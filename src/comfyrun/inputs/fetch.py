"""Fetching URL inputs safely: streamed to a file, size-capped, time-limited, type-checked, and
refused when any hop of the request would reach a non-public address (see `netguard`).

The address check runs inside aiohttp's resolver, on the addresses the connection will actually
use, so a host that resolves to a public address for a pre-check and a private one for the
connection (DNS rebinding) cannot slip through. Redirects are followed by hand so that every hop's
scheme and host are checked again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote, urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from comfyrun.errors import InputRejected
from comfyrun.inputs.netguard import AddressPolicy, literal_ip
from comfyrun.inputs.specs import InputLimits

log = logging.getLogger(__name__)

#: host, port -> IP address strings. The seam tests use to stand in for DNS.
Resolve = Callable[[str, int], Awaitable[list[str]]]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: How long the submission-time check waits for a name to resolve.
RESOLVE_TIMEOUT_S = 5.0
WRITE_BATCH = 1 << 20


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A URL input on local disk."""

    path: Path
    size_bytes: int
    content_type: str
    #: From Content-Disposition, else the last segment of the URL path; None if neither says.
    filename: str | None
    #: The URL the bytes came from, after redirects.
    url: str
    #: The validators the answer carried (what a later conditional or ranged GET sends back).
    etag: str | None = None
    last_modified: str | None = None
    #: A conditional GET (If-None-Match / If-Modified-Since given) answered 304: `dest` is
    #: untouched and `size_bytes` is 0.
    not_modified: bool = False
    #: The bytes `dest` held from an earlier try that this answer (206) continued.
    resumed_from: int = 0


class UrlFetcher:
    """Fetches URL inputs under `limits` (size, time, content type, redirects, allow-list)."""

    def __init__(
        self,
        limits: InputLimits,
        *,
        resolve: Resolve | None = None,
        user_agent: str = "comfyrun",
        what: str = "input URL",
    ) -> None:
        self.limits = limits
        self.policy = AddressPolicy.from_entries(limits.allow_networks)
        self._resolve = resolve
        self._user_agent = user_agent
        #: the URLs' role, for the refusals' messages ("input URL", "model URL")
        self.what = what

    async def check(self, url: str, *, what: str | None = None) -> None:
        """The refusal `fetch` would make of `url`'s first hop, made now without connecting:
        the scheme, the host (every spelling of an address, `localhost`) and, for a name, every
        address it resolves to by the same resolver. A name that does not resolve now is not
        refused here (the fetch reports it); `allow_networks` opens the same doors."""
        what = what or self.what
        parts = self.policy.check_url(url, what=what)
        host = (parts.hostname or "").rstrip(".")
        if literal_ip(host) is not None or self.policy.host_is_allowed(host):
            return
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await (self._resolve or system_resolve)(host, port)
        except (OSError, TimeoutError) as exc:
            log.debug("cannot resolve %s at submission: %s", host, exc)
            return
        for address in addresses:
            self.policy.check_address(address, host=host, url=url, what=what)

    async def fetch(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        resume_from: int = 0,
        keep_partial: bool = False,
        seen: dict[str, str] | None = None,
    ) -> FetchedFile:
        """Download `url` into the file `dest`. Raises InputRejected (details carry `reason`:
        bad_scheme, private_address, too_many_redirects, http_status (with `status`, and
        `retry_after` when the answer had one), content_type, file_too_large, timeout (with
        `idle_s` when it was the idle limit), fetch_failed, range_refused); `dest` is removed
        on failure unless `keep_partial` (what came is kept, to resume from).

        `headers` are sent with the request (conditional ones make a 304 a FetchedFile with
        `not_modified`). `resume_from` > 0: `dest` already holds that many bytes of the file;
        they are asked for from there (`Range`, and `If-Range` among `headers`): a 206 that
        continues them is appended, a 200 (the server ignores ranges, or the file changed)
        replaces them. `seen` is filled with the answer's `status`, `etag` and `last_modified`
        as soon as its headers come (a body cut later leaves them, to resume by)."""
        cap = self.limits.max_file_bytes if max_bytes is None else max_bytes
        sent = dict(headers or {})
        if resume_from > 0:
            sent["Range"] = f"bytes={resume_from}-"
        try:
            async with asyncio.timeout(self.limits.fetch_timeout_s):
                return await self._fetch(url, dest, cap, sent, resume_from, seen)
        except TimeoutError as exc:
            if not keep_partial:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise InputRejected(
                f"fetching {url} took longer than {self.limits.fetch_timeout_s:g} s",
                details={"url": url, "reason": "timeout"},
            ) from exc
        except BaseException:
            if not keep_partial:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise

    async def _fetch(
        self,
        url: str,
        dest: Path,
        cap: int,
        sent: dict[str, str],
        resume_from: int,
        seen: dict[str, str] | None,
    ) -> FetchedFile:
        resolver = _GuardedResolver(self.policy, self._resolve, self.what)
        connector = aiohttp.TCPConnector(
            resolver=resolver, use_dns_cache=False, family=socket.AF_UNSPEC
        )
        headers = {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        idle = self.limits.fetch_idle_timeout_s
        # no total: fetch() bounds the whole; a server silent for `idle` is given up at once
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=idle, sock_read=idle)
        async with aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            trust_env=False,
            auto_decompress=False,
            timeout=timeout,
        ) as session:
            current = url
            for _ in range(self.limits.max_redirects + 1):
                self.policy.check_url(current, what=self.what)
                try:
                    async with session.get(
                        current, allow_redirects=False, headers=sent
                    ) as response:
                        if response.status in REDIRECT_STATUSES and "Location" in response.headers:
                            current = urljoin(current, response.headers["Location"])
                            continue
                        if seen is not None:
                            seen.clear()
                            seen["status"] = str(response.status)
                            for key, header in (
                                ("etag", "ETag"),
                                ("last_modified", "Last-Modified"),
                            ):
                                if header in response.headers:
                                    seen[key] = response.headers[header]
                        return await self._save(current, response, dest, cap, sent, resume_from)
                except aiohttp.ServerTimeoutError as exc:  # (sock_connect, sock_read)
                    raise InputRejected(
                        f"fetching {current} failed: it sent nothing for "
                        f"{self.limits.fetch_idle_timeout_s:g} s",
                        details={"url": current, "reason": "timeout", "idle_s": idle},
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise InputRejected(
                        f"fetching {current} failed: {exc}",
                        details={"url": current, "reason": "fetch_failed"},
                    ) from exc
            raise InputRejected(
                f"fetching {url} redirected more than {self.limits.max_redirects} times",
                details={"url": url, "reason": "too_many_redirects"},
            )

    async def _save(
        self,
        url: str,
        response: aiohttp.ClientResponse,
        dest: Path,
        cap: int,
        sent: Mapping[str, str],
        resume_from: int,
    ) -> FetchedFile:
        etag = response.headers.get("ETag")
        last_modified = response.headers.get("Last-Modified")
        conditional = "If-None-Match" in sent or "If-Modified-Since" in sent
        if response.status == 304 and conditional:
            return FetchedFile(
                dest, 0, "", None, url, etag=etag, last_modified=last_modified, not_modified=True
            )
        if response.status == 416 and resume_from > 0:
            raise InputRejected(
                f"fetching {url} from byte {resume_from} was refused (HTTP 416)",
                details={"url": url, "reason": "range_refused", "status": 416},
            )
        if not 200 <= response.status < 300:
            details: dict[str, object] = {
                "url": url,
                "reason": "http_status",
                "status": response.status,
            }
            if "Retry-After" in response.headers:
                details["retry_after"] = response.headers["Retry-After"]
            raise InputRejected(f"fetching {url} returned HTTP {response.status}", details=details)
        start = 0
        if response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if resume_from <= 0 or start != resume_from:
                raise InputRejected(
                    f"fetching {url} answered a range from byte {start}, not {resume_from}",
                    details={"url": url, "reason": "range_refused", "status": 206},
                )
        content_type = (response.content_type or "application/octet-stream").lower()
        if not content_type_allowed(content_type, self.limits.allowed_content_types):
            raise InputRejected(
                f"{url} is {content_type}, which is not an allowed input type",
                details={
                    "url": url,
                    "reason": "content_type",
                    "content_type": content_type,
                    "allowed": list(self.limits.allowed_content_types),
                },
            )
        if response.content_length is not None and start + response.content_length > cap:
            raise _too_large(url, cap)
        size = start
        fh = await asyncio.to_thread(dest.open, "ab" if start else "wb")
        try:
            batch = bytearray()
            try:
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > cap:
                        raise _too_large(url, cap)
                    batch += chunk
                    if len(batch) >= WRITE_BATCH:
                        await asyncio.to_thread(fh.write, bytes(batch))
                        batch.clear()
            except aiohttp.ClientError:
                # the body stopped (cut, or silent too long): what came is kept, to resume from
                await asyncio.to_thread(_finish, fh, bytes(batch))
                raise
            await asyncio.to_thread(_finish, fh, bytes(batch))
        finally:
            await asyncio.to_thread(fh.close)
        log.debug("fetched %s (%d bytes)", url, size, extra={"action": "input.fetch"})
        return FetchedFile(
            dest,
            size,
            content_type,
            _filename(response, url),
            url,
            etag=etag,
            last_modified=last_modified,
            resumed_from=start,
        )


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    """Prefix entries ("image/") match a family; the others match exactly."""
    base = content_type.split(";", 1)[0].strip().lower()
    return any(base.startswith(a) if a.endswith("/") else base == a for a in allowed)


class _GuardedResolver(AbstractResolver):
    """Resolves like the system does, then refuses any address the policy forbids."""

    def __init__(self, policy: AddressPolicy, resolve: Resolve | None, what: str) -> None:
        self._policy = policy
        self._resolve = resolve
        self._what = what

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".")
        addresses = await (self._resolve or system_resolve)(name, port)
        if not addresses:
            raise OSError(f"{name} has no addresses")
        for address in addresses:  # every one: the connector may try any of them
            self._policy.check_address(address, host=name, what=self._what)
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(
                hostname=name,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=flags,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives `host`, without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _range_start(content_range: str | None) -> int:
    """The first byte of `Content-Range: bytes FIRST-LAST/TOTAL` (-1 when unreadable)."""
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", content_range or "")
    return int(match.group(1)) if match else -1


def _finish(fh: IO[bytes], tail: bytes) -> None:
    fh.write(tail)
    fh.flush()


def _too_large(url: str, cap: int) -> InputRejected:
    return InputRejected(
        f"{url} is larger than {cap} bytes",
        details={"url": url, "reason": "file_too_large", "limit": cap},
    )


def _filename(response: aiohttp.ClientResponse, url: str) -> str | None:
    disposition = response.headers.get("Content-Disposition")
    if disposition:
        msg = Message()
        msg["content-disposition"] = disposition
        name = msg.get_filename()
        if name:
            return PurePosixPath(name.replace("\\", "/")).name or None
    path = unquote(response.url.path if response.url else url)
    last = re.split(r"/", path)[-1]
    return last or None


__all__ = ["FetchedFile", "Resolve", "UrlFetcher", "content_type_allowed", "system_resolve"]
