"""Where a model's bytes come from: http(s) through the URL-input fetcher (same SSRF rules and
the same `fetch_allow` list), s3:// through boto3, or an uploaded asset. Each writes into the
file it is given, streamed, under a size cap, and reports progress.

An http(s) download is tried up to `DownloadLimits.attempts` times: a transient failure (the
connection refused, reset or cut mid-body, no byte for `idle_timeout_s`, HTTP 408, 429 or 5xx)
is tried again after a backoff (doubling from `retry_base_s`, jittered; a Retry-After is
honoured up to `retry_max_s`), continuing the bytes already there with a Range request when
the server answered with a strong ETag or a Last-Modified (`If-Range`: a file that changed
meanwhile comes whole). Anything else (HTTP 404, 403, a non-public address, a file too large,
a wrong content type) fails at once; the hash is checked by the cache, after. The waits are
plain sleeps: cancelling the download stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from comfyrun.errors import InputRejected, MissingAsset
from comfyrun.inputs.check import check_s3_url
from comfyrun.inputs.fetch import Resolve, UrlFetcher
from comfyrun.inputs.specs import InputLimits
from comfyrun.models.records import Downloader, Progress, Validators
from comfyrun.models.specs import ModelRef

log = logging.getLogger(__name__)

#: Content types a model URL may answer with (binary files; an HTML error page is refused).
MODEL_CONTENT_TYPES = ("application/", "binary/")


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """Caps on one model download; `fetch_allow` opens private addresses (CIDRs or hosts)."""

    max_bytes: int = 64 * 1024**3
    timeout_s: float = 3600.0
    #: a URL that sends nothing this long (no answer, or a body that stops) is given up
    idle_timeout_s: float = 60.0
    fetch_allow: tuple[str, ...] = ()
    progress_interval_s: float = 0.5
    #: tries of one http(s) URL before its job fails (transient failures only; 1: no retry)
    attempts: int = 3
    #: the wait before the second try, doubled for each later one (jittered)
    retry_base_s: float = 2.0
    #: the longest wait between two tries, a server's Retry-After included
    retry_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


def make_downloader(
    limits: DownloadLimits,
    *,
    assets: Any = None,
    resolve: Resolve | None = None,
    s3_client: Callable[[str | None, str | None], Any] | None = None,
) -> Downloader:
    """A Downloader for ModelCache. `resolve` stands in for DNS (tests); `s3_client(endpoint,
    region)` makes a boto3 client (default: boto3's own credentials chain)."""
    fetcher = UrlFetcher(
        InputLimits(
            max_file_bytes=limits.max_bytes,
            fetch_timeout_s=limits.timeout_s,
            fetch_idle_timeout_s=limits.idle_timeout_s,
            allowed_content_types=MODEL_CONTENT_TYPES,
            allow_networks=limits.fetch_allow,
        ),
        resolve=resolve,
        user_agent="comfyrun-models",
        what="model URL",
    )

    async def download(
        ref: ModelRef, dest: Path, progress: Progress, *, revalidate: Validators | None = None
    ) -> Validators | None:
        got: Validators | None = None
        async with _watch_size(dest, progress, limits.progress_interval_s):
            if ref.asset_id is not None:
                await _from_asset(assets, ref.asset_id, dest, limits.max_bytes)
            elif ref.url is not None and ref.url.lower().startswith("s3://"):
                await asyncio.to_thread(
                    _from_s3, ref.url, dest, limits.max_bytes, s3_client or _boto3_client
                )
            else:
                assert ref.url is not None
                got = await fetch_with_retries(fetcher, limits, ref.url, dest, revalidate)
                if got.not_modified:
                    return got
        size = await asyncio.to_thread(_size, dest)
        progress(size, size)
        return got

    return download


async def fetch_with_retries(
    fetcher: UrlFetcher,
    limits: DownloadLimits,
    url: str,
    dest: Path,
    revalidate: Validators | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Validators:
    """`url` into `dest`, tried as the module docstring says. `revalidate`: the validators of
    the copy the cache holds, sent as a conditional GET (a 304 returns `not_modified`)."""
    known: dict[str, str] = {}  # what the last answer said of the file (to resume by)
    for attempt in range(1, limits.attempts + 1):
        headers: dict[str, str] = {}
        have = await asyncio.to_thread(_size, dest)
        if_range = _if_range(known)
        resume = have if have > 0 and if_range is not None else 0
        if resume:
            headers["If-Range"] = if_range  # type: ignore[assignment]
        elif revalidate is not None:
            if revalidate.etag:
                headers["If-None-Match"] = revalidate.etag
            if revalidate.last_modified:
                headers["If-Modified-Since"] = revalidate.last_modified
        seen: dict[str, str] = {}
        try:
            got = await fetcher.fetch(
                url,
                dest,
                max_bytes=limits.max_bytes,
                headers=headers,
                resume_from=resume,
                keep_partial=True,
                seen=seen,
            )
        except InputRejected as exc:
            if seen.get("status") in ("200", "206"):
                known = seen
            wait = _retry_wait(exc, attempt, limits)
            if wait is None or attempt == limits.attempts:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
                if wait is None or attempt == 1:
                    raise
                raise InputRejected(
                    f"{exc.message} (tried {attempt} times)",
                    details={**exc.details, "attempts": attempt},
                ) from exc
            if exc.details.get("reason") == "range_refused":
                known = {}
                await asyncio.to_thread(dest.unlink, missing_ok=True)
            log.warning(
                "model URL %s: try %d of %d failed (%s); trying again in %.1f s",
                url,
                attempt,
                limits.attempts,
                exc.message,
                wait,
                extra={"action": "model.fetch_retry", "url": url, "attempt": attempt},
            )
            await sleep(wait)
            continue
        if resume and got.resumed_from:
            log.info(
                "model URL %s: resumed at byte %d",
                url,
                got.resumed_from,
                extra={"action": "model.fetch_resumed", "url": url},
            )
        return Validators(
            etag=got.etag,
            last_modified=got.last_modified,
            size=None if got.not_modified else got.size_bytes,
            not_modified=got.not_modified,
        )
    raise AssertionError("unreachable")  # pragma: no cover


#: HTTP statuses a later try may well not get.
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def _retry_wait(exc: InputRejected, attempt: int, limits: DownloadLimits) -> float | None:
    """How long to wait before trying again after `exc` (None: it is not worth another try)."""
    details = exc.details
    reason = details.get("reason")
    after: float | None = None
    if reason == "http_status":
        status = int(details.get("status") or 0)
        if status not in TRANSIENT_STATUSES and not 500 <= status < 600:
            return None
        after = _retry_after(details.get("retry_after"))
    elif not (
        reason in ("fetch_failed", "range_refused") or (reason == "timeout" and "idle_s" in details)
    ):
        return None
    backoff: float = limits.retry_base_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
    return min(limits.retry_max_s, max(backoff, after or 0.0))


def _retry_after(value: object) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _if_range(seen: dict[str, str]) -> str | None:
    """The validator that makes a ranged GET safe (a strong ETag, else the Last-Modified)."""
    etag = seen.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return seen.get("last_modified")


@contextlib.asynccontextmanager
async def _watch_size(dest: Path, progress: Progress, interval_s: float) -> Any:
    """Report the growing file's size while the download runs (fetchers have no hook)."""

    async def watch() -> None:
        last = -1
        while True:
            await asyncio.sleep(interval_s)
            size = await asyncio.to_thread(_size, dest)
            if size != last:
                progress(size, None)
                last = size

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _from_asset(assets: Any, asset_id: str, dest: Path, cap: int) -> None:
    if assets is None:
        raise MissingAsset(f"asset {asset_id!r}: no asset service here")
    asset = await assets.get(asset_id)
    size = 0
    fh = await asyncio.to_thread(dest.open, "wb")
    try:
        async for chunk in assets.open_content(asset):
            size += len(chunk)
            if size > cap:
                raise _too_large(f"asset:{asset_id}", cap)
            await asyncio.to_thread(fh.write, chunk)
    finally:
        await asyncio.to_thread(fh.close)


def _from_s3(url: str, dest: Path, cap: int, client_factory: Callable[..., Any]) -> None:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    check_s3_url(url)  # as at submission
    bucket, key = parts.netloc, parts.path.lstrip("/")
    client = client_factory(query.get("endpoint_url"), query.get("region"))
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if int(head.get("ContentLength", 0)) > cap:
            raise _too_large(url, cap)
        client.download_file(bucket, key, str(dest))
    except InputRejected:
        raise
    except Exception as exc:  # botocore's errors: no common base worth importing here
        raise InputRejected(
            f"fetching {url} failed: {exc}", details={"url": url, "reason": "fetch_failed"}
        ) from exc


def _boto3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _too_large(source: str, cap: int) -> InputRejected:
    return InputRejected(
        f"{source} is larger than the {cap} byte limit for a model file",
        details={"url": source, "reason": "file_too_large", "max_bytes": cap},
    )


__all__ = ["MODEL_CONTENT_TYPES", "DownloadLimits", "fetch_with_retries", "make_downloader"]
