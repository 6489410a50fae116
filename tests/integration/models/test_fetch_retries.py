"""A model host that fails now and then: transient failures (a connection cut mid-body, 502,
503 with Retry-After, 429) are tried again, continuing with a Range request where the server
allows (If-Range: a file changed meanwhile comes whole); permanent ones (403, 404) fail at once;
the tries are bounded, and a job that leaves during a backoff stops it at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.support.model_server import Fault, ModelServer, model_server

from comfyrun.errors import InputRejected
from comfyrun.inputs.fetch import UrlFetcher
from comfyrun.inputs.specs import InputLimits
from comfyrun.models import DownloadLimits, ModelCache, ModelRef, make_downloader
from comfyrun.models.download import MODEL_CONTENT_TYPES, fetch_with_retries

BIG = bytes(range(256)) * 64  # 16 KiB
NEW = b"changed-" * 2048


def limits(**kw: object) -> DownloadLimits:
    settings: dict[str, object] = {
        "fetch_allow": ("127.0.0.1",),
        "progress_interval_s": 0.05,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
    }
    settings.update(kw)
    return DownloadLimits(**settings)  # type: ignore[arg-type]


def open_cache(root: Path, **kw: object) -> ModelCache:
    cache = ModelCache(root, make_downloader(limits(**kw)))
    cache.open()
    return cache


def ref(server: ModelServer, file: str = "m.safetensors") -> ModelRef:
    return ModelRef(folder="checkpoints", name=file, url=f"{server.url}/{file}")


@pytest.fixture
async def server() -> ModelServer:
    async with model_server({"m.safetensors": BIG}) as s:
        yield s  # type: ignore[misc]


def linked(cache: ModelCache, name: str = "m.safetensors") -> bytes:
    return (cache.folders_dir / "checkpoints" / name).read_bytes()


async def test_transient_statuses_are_tried_again(server: ModelServer, tmp_path: Path) -> None:
    server.fail("m.safetensors", Fault(status=503, retry_after="0"), Fault(status=502))
    cache = open_cache(tmp_path)
    (await cache.acquire([ref(server)])).release()
    assert linked(cache) == BIG
    assert server.hits["m.safetensors"] == 3 and cache.downloads == 1
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_a_connection_cut_mid_body_is_resumed_with_a_range(
    server: ModelServer, tmp_path: Path
) -> None:
    server.fail("m.safetensors", Fault(cut_after=5000))
    cache = open_cache(tmp_path)
    (await cache.acquire([ref(server)])).release()
    assert linked(cache) == BIG
    (_, first), (_, second) = server.requests
    assert "Range" not in first
    assert second["Range"] == "bytes=5000-"
    assert second["If-Range"] == server.etag("m.safetensors")


async def test_a_resume_by_last_modified_when_there_is_no_etag(
    server: ModelServer, tmp_path: Path
) -> None:
    server.fail("m.safetensors", Fault(cut_after=3000))
    cache = open_cache(tmp_path)
    etag = server.etag

    def no_etag(name: str) -> str:
        return 'W/"weak"'  # a weak ETag cannot make a range safe: the date does

    server.etag = no_etag  # type: ignore[method-assign]
    try:
        (await cache.acquire([ref(server)])).release()
    finally:
        server.etag = etag  # type: ignore[method-assign]
    assert linked(cache) == BIG
    assert server.requests[1][1]["If-Range"] == server.last_modified("m.safetensors")


async def test_a_file_that_changed_between_tries_comes_whole(
    server: ModelServer, tmp_path: Path
) -> None:
    server.fail("m.safetensors", Fault(cut_after=5000, change_to=NEW))
    cache = open_cache(tmp_path)
    (await cache.acquire([ref(server)])).release()
    assert linked(cache) == NEW  # not the first 5000 bytes of BIG and the rest of NEW
    assert server.requests[1][1]["Range"] == "bytes=5000-"  # asked, and refused by If-Range


async def test_a_server_without_ranges_sends_it_whole_again(
    server: ModelServer, tmp_path: Path
) -> None:
    server.ranges = False
    server.fail("m.safetensors", Fault(cut_after=5000))
    cache = open_cache(tmp_path)
    (await cache.acquire([ref(server)])).release()
    assert linked(cache) == BIG and server.hits["m.safetensors"] == 2


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_permanent_failures_fail_at_once_naming_the_url_and_status(
    server: ModelServer, tmp_path: Path, status: int
) -> None:
    server.fail("m.safetensors", Fault(status=status))
    cache = open_cache(tmp_path)
    with pytest.raises(InputRejected) as caught:
        await cache.acquire([ref(server)])
    assert f"{server.url}/m.safetensors returned HTTP {status}" in caught.value.message
    assert caught.value.details["status"] == status
    assert server.hits["m.safetensors"] == 1
    assert cache.list() == [] and list((tmp_path / "tmp").iterdir()) == []


async def test_the_tries_are_bounded(server: ModelServer, tmp_path: Path) -> None:
    server.fail("m.safetensors", *[Fault(status=503)] * 5)
    cache = open_cache(tmp_path, attempts=3)
    with pytest.raises(InputRejected, match=r"returned HTTP 503 \(tried 3 times\)") as caught:
        await cache.acquire([ref(server)])
    assert caught.value.details["attempts"] == 3 and caught.value.details["status"] == 503
    assert server.hits["m.safetensors"] == 3
    assert cache.list() == [] and list((tmp_path / "tmp").iterdir()) == []
    once = open_cache(tmp_path / "once", attempts=1)
    with pytest.raises(InputRejected, match=r"returned HTTP 503$"):
        await once.acquire([ref(server)])
    assert server.hits["m.safetensors"] == 4


async def test_retry_after_is_honoured_up_to_a_cap(server: ModelServer, tmp_path: Path) -> None:
    server.fail(
        "m.safetensors",
        Fault(status=429, retry_after="3"),
        Fault(status=503, retry_after="3600"),
    )
    fetcher = UrlFetcher(
        InputLimits(allowed_content_types=MODEL_CONTENT_TYPES, allow_networks=("127.0.0.1",))
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    got = await fetch_with_retries(
        fetcher,
        limits(retry_base_s=0.01, retry_max_s=10.0),
        f"{server.url}/m.safetensors",
        tmp_path / "m",
        sleep=sleep,
    )
    assert (tmp_path / "m").read_bytes() == BIG and got.size == len(BIG)
    assert waits == [3.0, 10.0]  # as asked; then an hour asked, the cap given


async def test_a_job_that_leaves_during_a_backoff_stops_it_at_once(
    server: ModelServer, tmp_path: Path
) -> None:
    server.fail("m.safetensors", Fault(status=503, retry_after="30"))
    cache = open_cache(tmp_path, retry_max_s=30.0)
    waiter = asyncio.ensure_future(cache.acquire([ref(server)]))
    await asyncio.wait_for(server.requested.wait(), 30)
    await asyncio.sleep(0.2)  # the 503 came: it waits its 30 s
    started = time.monotonic()
    waiter.cancel()  # the job was canceled (unless_canceled cancels its placing)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.2)
    assert len(cache._flights) == 0  # nobody waits for it: the download itself stopped
    assert server.hits["m.safetensors"] == 1
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_a_body_that_stalls_is_cut_after_the_idle_timeout_and_resumed(
    server: ModelServer, tmp_path: Path
) -> None:
    server.fail("m.safetensors", Fault(stall_after=4000))
    cache = open_cache(tmp_path, idle_timeout_s=0.3)
    started = time.monotonic()
    (await cache.acquire([ref(server)])).release()
    assert linked(cache) == BIG and time.monotonic() - started < 5
    assert server.requests[1][1]["Range"] == "bytes=4000-"
    server.fail("m.safetensors", Fault(stall_after=4000))
    once = open_cache(tmp_path / "once", idle_timeout_s=0.3, attempts=1)
    with pytest.raises(InputRejected, match=r"sent nothing for 0.3 s") as caught:
        await once.acquire([ref(server)])
    assert caught.value.details["reason"] == "timeout"
