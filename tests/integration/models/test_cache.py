"""The model cache on disk: one download per file, shared by concurrent jobs, verified hashes,
LRU eviction under a byte budget that never touches a file in use, and the SSRF rules of URL
inputs (opened by `fetch_allow`)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
from pathlib import Path

import blake3
import pytest
from tests.support.model_server import ModelServer, model_server

from comfyrun.errors import Conflict, HashMismatch, InputRejected, NotFound
from comfyrun.models import DownloadLimits, ModelCache, ModelRef, make_downloader
from comfyrun.models.cache import ModelProgress

LORA = b"lora-bytes-" * 100
CKPT = b"checkpoint-" * 300


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def open_cache(
    root: Path, *, budget: int | None = None, allow: tuple[str, ...] = ("127.0.0.1",)
) -> ModelCache:
    cache = ModelCache(
        root,
        make_downloader(DownloadLimits(fetch_allow=allow, progress_interval_s=0.05)),
        budget_bytes=budget,
        clock=Clock(),
    )
    cache.open()
    return cache


def ref(server: ModelServer, file: str, folder: str = "loras", **kw: str) -> ModelRef:
    return ModelRef(folder=folder, name=kw.pop("name", file), url=f"{server.url}/{file}", **kw)


@pytest.fixture
async def server() -> ModelServer:
    async with model_server(
        {"a.safetensors": LORA, "b.safetensors": CKPT, "c.safetensors": LORA + b"c"}
    ) as s:
        yield s  # type: ignore[misc]


async def test_a_file_lands_once_under_its_name(server: ModelServer, tmp_path: Path) -> None:
    cache = open_cache(tmp_path)
    seen: list[tuple[str, int, int | None]] = []
    lease = await cache.acquire(
        [ref(server, "a.safetensors")], lambda r, d, t: seen.append((r.name, d, t))
    )
    linked = cache.folders_dir / "loras" / "a.safetensors"
    assert linked.read_bytes() == LORA
    assert seen[-1] == ("a.safetensors", len(LORA), len(LORA))
    lease.release()
    again = await cache.acquire([ref(server, "a.safetensors")])
    again.release()
    assert server.hits["a.safetensors"] == 1 and cache.downloads == 1
    (model,) = cache.list()
    assert model.blake3 == blake3.blake3(LORA).hexdigest() and model.names == [
        "loras/a.safetensors"
    ]
    # the index survives a restart: still no second download
    reopened = open_cache(tmp_path)
    (await reopened.acquire([ref(server, "a.safetensors")])).release()
    assert server.hits["a.safetensors"] == 1
    assert 'base_path: "' + str(cache.folders_dir) + '"' in cache.extra_paths_file.read_text()


async def test_concurrent_jobs_share_one_download(server: ModelServer, tmp_path: Path) -> None:
    cache = open_cache(tmp_path)
    server.gate.clear()
    leases = [
        asyncio.create_task(cache.acquire([ref(server, "b.safetensors", "checkpoints")]))
        for _ in range(5)
    ]
    await asyncio.wait_for(server.requested.wait(), 30)
    server.gate.set()
    done = await asyncio.gather(*leases)
    assert server.hits["b.safetensors"] == 1 and cache.downloads == 1
    assert cache.list()[0].in_use == 5
    for lease in done:
        lease.release()
    assert cache.list()[0].in_use == 0


async def test_every_job_waiting_on_a_shared_download_hears_its_progress(
    server: ModelServer, tmp_path: Path
) -> None:
    cache = open_cache(tmp_path)
    server.gate.clear()
    heard: dict[str, list[tuple[str, int, int | None]]] = {"first": [], "late": []}

    def follow(who: str) -> ModelProgress:
        return lambda r, done, total: heard[who].append((r.name, done, total))

    big = ref(server, "b.safetensors", "checkpoints")
    first = asyncio.create_task(cache.acquire([big], follow("first")))
    await asyncio.wait_for(server.requested.wait(), 30)
    late = asyncio.create_task(cache.acquire([big], follow("late")))
    server.gate.set()
    for lease in await asyncio.gather(first, late):
        lease.release()
    assert server.hits["b.safetensors"] == 1
    for who in ("first", "late"):
        assert heard[who], who
        assert heard[who][-1] == ("b.safetensors", len(CKPT), len(CKPT)), who
        done = [d for _, d, _ in heard[who]]
        assert done == sorted(done), who


async def test_a_wrong_hash_fails_and_keeps_nothing(server: ModelServer, tmp_path: Path) -> None:
    cache = open_cache(tmp_path)
    wrong = ref(server, "a.safetensors", hash="sha256:" + "0" * 64)
    with pytest.raises(HashMismatch, match="not the declared sha256:0000"):
        await cache.acquire([wrong])
    assert cache.list() == []
    assert list((tmp_path / "blobs").iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == []
    assert not (cache.folders_dir / "loras" / "a.safetensors").exists()
    right = ref(server, "a.safetensors", hash="sha256:" + hashlib.sha256(LORA).hexdigest())
    (await cache.acquire([right])).release()
    by_blake3 = ref(server, "a.safetensors", hash="blake3:" + blake3.blake3(LORA).hexdigest())
    (await cache.acquire([by_blake3])).release()
    assert server.hits["a.safetensors"] == 2  # the failed one, then one good download


async def test_eviction_under_a_small_budget_spares_files_in_use(
    server: ModelServer, tmp_path: Path
) -> None:
    cache = open_cache(tmp_path, budget=len(CKPT) + len(LORA) + 10)
    in_use = await cache.acquire([ref(server, "b.safetensors", "checkpoints")])  # oldest, pinned
    (await cache.acquire([ref(server, "a.safetensors")])).release()
    (await cache.acquire([ref(server, "c.safetensors")])).release()  # over budget: evict LRU
    names = sorted(n for m in cache.list() for n in m.names)
    assert names == ["checkpoints/b.safetensors", "loras/c.safetensors"]  # a went, b is in use
    assert not (cache.folders_dir / "loras" / "a.safetensors").exists()
    assert cache.total_bytes <= cache.budget_bytes  # type: ignore[operator]
    with pytest.raises(Conflict, match="in use"):
        await cache.remove("checkpoints/b.safetensors")
    in_use.release()
    assert (await cache.remove("checkpoints/b.safetensors")).size_bytes == len(CKPT)
    with pytest.raises(NotFound):
        await cache.remove("checkpoints/b.safetensors")


async def test_a_name_in_use_is_not_repointed(server: ModelServer, tmp_path: Path) -> None:
    cache = open_cache(tmp_path)
    lease = await cache.acquire([ref(server, "a.safetensors", name="x.safetensors")])
    with pytest.raises(Conflict, match="another name"):
        await cache.acquire([ref(server, "c.safetensors", name="x.safetensors")])
    lease.release()
    (await cache.acquire([ref(server, "c.safetensors", name="x.safetensors")])).release()
    assert (cache.folders_dir / "loras" / "x.safetensors").read_bytes() == LORA + b"c"


async def test_private_addresses_are_refused_unless_allowed(
    server: ModelServer, tmp_path: Path
) -> None:
    closed = open_cache(tmp_path / "closed", allow=())
    with pytest.raises(InputRejected, match=r"^model URL host .* not a public address"):
        await closed.acquire([ref(server, "a.safetensors")])
    assert server.hits["a.safetensors"] == 0 and closed.list() == []
    opened = open_cache(tmp_path / "open", allow=("127.0.0.0/8",))
    (await opened.acquire([ref(server, "a.safetensors")])).release()
    assert server.hits["a.safetensors"] == 1


async def test_a_size_cap_and_http_errors_keep_nothing(server: ModelServer, tmp_path: Path) -> None:
    cache = ModelCache(
        tmp_path,
        make_downloader(DownloadLimits(max_bytes=100, fetch_allow=("127.0.0.1",))),
    )
    cache.open()
    with pytest.raises(InputRejected, match="larger than"):
        await cache.acquire([ref(server, "a.safetensors")])
    with pytest.raises(InputRejected, match="HTTP 404"):
        await cache.acquire([ref(server, "missing.safetensors")])
    assert cache.list() == [] and list((tmp_path / "tmp").iterdir()) == []


async def test_s3_urls_download_through_boto3(tmp_path: Path) -> None:
    from tests.support.media import moto_s3_server, new_bucket, s3_client

    with moto_s3_server() as endpoint:
        client = s3_client(endpoint)
        bucket = new_bucket(client)
        client.put_object(Bucket=bucket, Key="models/u.safetensors", Body=CKPT)
        seen: list[str | None] = []

        def factory(endpoint_url: str | None, region: str | None) -> object:
            seen.append(endpoint_url)
            return client

        cache = ModelCache(
            tmp_path, make_downloader(DownloadLimits(max_bytes=len(CKPT)), s3_client=factory)
        )
        cache.open()
        url = f"s3://{bucket}/models/u.safetensors?endpoint_url={endpoint}"
        model = await cache.pull(ModelRef(folder="diffusion_models", name="u.safetensors", url=url))
        assert model.size_bytes == len(CKPT) and seen == [endpoint]
        assert (cache.folders_dir / "diffusion_models" / "u.safetensors").read_bytes() == CKPT
        small = ModelCache(
            tmp_path / "small", make_downloader(DownloadLimits(max_bytes=10), s3_client=factory)
        )
        small.open()
        with pytest.raises(InputRejected, match="larger than"):
            await small.pull(ModelRef(folder="vae", name="u", url=url))
        with pytest.raises(InputRejected, match="failed"):
            await cache.pull(ModelRef(folder="vae", name="m", url=f"s3://{bucket}/missing"))


async def test_a_download_that_fails_after_its_last_waiter_left_logs_no_unretrieved_error(
    tmp_path: Path,
) -> None:
    """(The job that wanted a file was canceled while it downloaded; the download failed later
    and asyncio logged "Task exception was never retrieved" with its traceback, as an ERROR.)"""
    release = asyncio.Event()

    async def failing(ref: ModelRef, dest: Path, progress: object) -> None:
        await release.wait()
        raise InputRejected("fetching it failed")

    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        cache = ModelCache(tmp_path, failing)
        cache.open()
        ref = ModelRef(folder="loras", name="x.safetensors", url="https://models.example/x")
        waiter = asyncio.ensure_future(cache.acquire([ref]))
        await asyncio.sleep(0.05)
        waiter.cancel()  # the job was canceled: it waits no more
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        for _ in range(5):
            await asyncio.sleep(0.01)
        del waiter
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))]


async def test_a_changed_url_is_served_from_the_cache_until_refreshed(
    server: ModelServer, tmp_path: Path
) -> None:
    """No download per job; `refresh` revalidates with the ETag kept (a conditional GET) and
    replaces the bytes only when they changed."""
    cache = open_cache(tmp_path)
    (await cache.acquire([ref(server, "a.safetensors")])).release()
    first_etag = server.etag("a.safetensors")
    (model,) = cache.list()
    assert model.validators[f"{server.url}/a.safetensors"]["etag"] == first_etag
    server.put("a.safetensors", CKPT)  # the host's file changed behind the same URL
    (await cache.acquire([ref(server, "a.safetensors")])).release()
    assert server.hits["a.safetensors"] == 1  # a job does not revalidate
    linked = cache.folders_dir / "loras" / "a.safetensors"
    assert linked.read_bytes() == LORA

    model, outcome = await cache.refresh(ref(server, "a.safetensors"))
    assert outcome == "replaced" and linked.read_bytes() == CKPT
    assert server.requests[-1][1].get("If-None-Match") == first_etag
    assert [m.blake3 for m in cache.list()] == [blake3.blake3(CKPT).hexdigest()]  # old dropped
    assert list((tmp_path / "blobs").iterdir()) == [tmp_path / "blobs" / model.blake3]

    reopened = open_cache(tmp_path)  # the validators are in the index
    model, outcome = await reopened.refresh(ref(server, "a.safetensors"))
    assert outcome == "not_modified" and server.hits["a.safetensors"] == 3
    assert server.requests[-1][1].get("If-None-Match") == server.etag("a.safetensors")
    assert linked.read_bytes() == CKPT and len(reopened.list()) == 1


async def test_refresh_without_validators_hashes_and_a_hash_needs_none(
    server: ModelServer, tmp_path: Path
) -> None:
    cache = open_cache(tmp_path)
    server.validators = False
    (await cache.acquire([ref(server, "a.safetensors")])).release()
    _, outcome = await cache.refresh(ref(server, "a.safetensors"))
    assert outcome == "unchanged" and server.hits["a.safetensors"] == 2
    assert len(cache.list()) == 1
    pinned = ref(
        server, "b.safetensors", "checkpoints", hash="blake3:" + blake3.blake3(CKPT).hexdigest()
    )
    _, outcome = await cache.refresh(pinned)
    assert outcome == "content_addressed" and server.hits["b.safetensors"] == 1
    _, outcome = await cache.refresh(pinned)
    assert outcome == "content_addressed" and server.hits["b.safetensors"] == 1  # nothing asked


async def test_a_name_in_use_is_not_refreshed(server: ModelServer, tmp_path: Path) -> None:
    cache = open_cache(tmp_path)
    lease = await cache.acquire([ref(server, "a.safetensors")])
    with pytest.raises(Conflict, match="in use by a running job"):
        await cache.refresh(ref(server, "a.safetensors"))
    lease.release()
    assert server.hits["a.safetensors"] == 1


async def test_a_job_that_asks_as_the_last_waiter_leaves_downloads_anew(
    server: ModelServer, tmp_path: Path
) -> None:
    """(The last waiter's leaving cancelled the download, which stayed listed until its task
    ended: a job that asked for the same file in that moment joined it and got its
    CancelledError, as if the job itself had been cancelled.)"""
    cache = open_cache(tmp_path)
    server.gate.clear()
    first = asyncio.ensure_future(cache.acquire([ref(server, "a.safetensors")]))
    await asyncio.wait_for(server.requested.wait(), 10)
    first.cancel()  # its job canceled: it leaves, and nobody else waits for the download
    second = asyncio.ensure_future(cache.acquire([ref(server, "a.safetensors")]))
    with pytest.raises(asyncio.CancelledError):
        await first
    server.gate.set()
    lease = await asyncio.wait_for(second, 10)
    assert [m.in_use for m in cache.list()] == [1]
    lease.release()
