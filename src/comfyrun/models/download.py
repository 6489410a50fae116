"""Where a model's bytes come from: http(s) through the URL-input fetcher (same SSRF rules and
the same `fetch_allow` list), s3:// through boto3, or an uploaded asset. Each writes into the
file it is given, streamed, under a size cap, and reports progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from comfyrun.errors import InputRejected, MissingAsset
from comfyrun.inputs.check import check_s3_url
from comfyrun.inputs.fetch import Resolve, UrlFetcher
from comfyrun.inputs.specs import InputLimits
from comfyrun.models.cache import Downloader, Progress
from comfyrun.models.specs import ModelRef

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

    async def download(ref: ModelRef, dest: Path, progress: Progress) -> None:
        async with _watch_size(dest, progress, limits.progress_interval_s):
            if ref.asset_id is not None:
                await _from_asset(assets, ref.asset_id, dest, limits.max_bytes)
            elif ref.url is not None and ref.url.lower().startswith("s3://"):
                await asyncio.to_thread(
                    _from_s3, ref.url, dest, limits.max_bytes, s3_client or _boto3_client
                )
            else:
                assert ref.url is not None
                await fetcher.fetch(ref.url, dest, max_bytes=limits.max_bytes)
        size = await asyncio.to_thread(_size, dest)
        progress(size, size)

    return download


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


__all__ = ["MODEL_CONTENT_TYPES", "DownloadLimits", "make_downloader"]
