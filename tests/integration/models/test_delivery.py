"""The dispatcher's model delivery step: pinned for the run, released at clean-up, refused on
a backend that cannot see the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from comfyrun.core.job import Job, NewJob
from comfyrun.dispatch.models import with_models
from comfyrun.errors import InputRejected, StorageError
from comfyrun.models import ModelCache, ModelRef
from comfyrun.store.memory import MemoryStore


async def fake_download(ref: ModelRef, dest: Path, progress: Any) -> None:
    await asyncio.to_thread(dest.write_bytes, b"weights")
    progress(7, 7)


async def place(job: Job, backend: Any, client: Any) -> Any:
    async def cleanup() -> None:
        return None

    return job.workflow, cleanup


async def job_with_models(store: MemoryStore) -> Job:
    models = [{"url": "https://h/x", "folder": "loras", "name": "x.safetensors"}]
    job, _ = await store.enqueue(NewJob(workflow={"1": {}}, options={"models": models}))
    return job


async def test_models_are_pinned_for_the_run_and_reported(tmp_path: Path) -> None:
    store = MemoryStore()
    await store.open()
    cache = ModelCache(tmp_path, fake_download)
    cache.open()
    job = await job_with_models(store)
    placer = with_models(place, cache, store, interval_s=0.0)
    _workflow, cleanup = await placer(
        job, SimpleNamespace(managed=True, receives_models=True, name="gpu0"), None
    )
    assert cache.list()[0].in_use == 1
    await cleanup()
    assert cache.list()[0].in_use == 0
    events = [e.data for e in await store.events_since(job.id) if e.kind == "model_download"]
    assert events[-1] == {
        "folder": "loras",
        "name": "x.safetensors",
        "bytes_done": 7,
        "bytes_total": 7,
        "finished": True,
    }


async def test_a_backend_comfyrun_does_not_manage_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    await store.open()
    cache = ModelCache(tmp_path, fake_download)
    cache.open()
    placer = with_models(place, cache, store)
    remote = SimpleNamespace(managed=False, receives_models=False, name="remote")
    with pytest.raises(InputRejected, match="not one comfyrun manages") as caught:
        await placer(await job_with_models(store), remote, None)
    assert caught.value.details["reason"] == "models_need_managed_backend"
    assert cache.list() == []


async def test_a_cache_disk_error_fails_the_job_clearly(tmp_path: Path) -> None:
    async def disk_full(ref: ModelRef, dest: Path, progress: Any) -> None:
        raise OSError(28, "No space left on device")

    store = MemoryStore()
    await store.open()
    cache = ModelCache(tmp_path, disk_full)
    cache.open()
    placer = with_models(place, cache, store)
    with pytest.raises(StorageError, match="No space left") as caught:
        await placer(
            await job_with_models(store),
            SimpleNamespace(managed=True, receives_models=True, name="g"),
            None,
        )
    assert caught.value.code == "storage_error" and cache.list() == []


async def test_a_cancel_during_a_download_backoff_ends_the_placing_at_once(
    tmp_path: Path,
) -> None:
    """The model host answered 503 with a long Retry-After: the job's cancel does not wait it
    out (unless_canceled cancels the placing; the download nobody waits for stops)."""
    from tests.support.model_server import Fault, model_server

    from comfyrun.core.job import JobStatus
    from comfyrun.core.state import Event
    from comfyrun.dispatch.cancel import CancelRequested, unless_canceled
    from comfyrun.dispatch.settings import DispatchSettings
    from comfyrun.models import DownloadLimits, make_downloader

    async with model_server({"x": b"weights" * 100}) as server:
        server.fail("x", Fault(status=503, retry_after="60"))
        store = MemoryStore()
        await store.open()
        limits = DownloadLimits(fetch_allow=("127.0.0.1",), retry_max_s=60.0)
        cache = ModelCache(tmp_path, make_downloader(limits))
        cache.open()
        models = [{"url": f"{server.url}/x", "folder": "loras", "name": "x.safetensors"}]
        await store.enqueue(NewJob(workflow={"1": {}}, options={"models": models}))
        job = await store.claim("w", 30)
        assert job is not None
        placer = with_models(place, cache, store)
        backend = SimpleNamespace(managed=True, receives_models=True, name="gpu0")
        placing = asyncio.ensure_future(
            unless_canceled(placer(job, backend, None), store, job.id, DispatchSettings())
        )
        await asyncio.wait_for(server.requested.wait(), 30)
        await asyncio.sleep(0.2)  # the 503 came; the download waits out its Retry-After
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
        with pytest.raises(CancelRequested):
            await asyncio.wait_for(placing, 5)
        assert loop.time() - asked < 2.0
        await asyncio.sleep(0.1)
        assert server.hits["x"] == 1 and len(cache._flights) == 0 and cache.list() == []


async def test_a_job_whose_models_download_is_running_in_its_view_and_its_events(
    tmp_path: Path,
) -> None:
    """(GET /api/v2/jobs/{id} said `queued` while the job's events said `running` and brought
    its `model_download` progress.) A download is its worker's work on it: `running`, both."""
    from comfyrun.api.wire import job_to_wire
    from comfyrun.core.job import JobStatus

    release = asyncio.Event()

    async def slow_download(ref: ModelRef, dest: Path, progress: Any) -> None:
        await asyncio.to_thread(dest.write_bytes, b"weigh")
        progress(5, 7)
        await release.wait()
        await asyncio.to_thread(dest.write_bytes, b"weights")
        progress(7, 7)

    store = MemoryStore()
    await store.open()
    cache = ModelCache(tmp_path, slow_download)
    cache.open()
    queued = await job_with_models(store)
    job = await store.claim("w", 30)
    assert job is not None and job.id == queued.id
    placer = with_models(place, cache, store, interval_s=0.0)
    backend = SimpleNamespace(managed=True, receives_models=True, name="gpu0")
    placing = asyncio.ensure_future(placer(job, backend, None))

    async def downloading() -> bool:
        events = await store.events_since(job.id)
        return any(e.kind == "model_download" for e in events)

    for _ in range(200):
        if await downloading():
            break
        await asyncio.sleep(0.01)
    seen = await store.get(job.id)
    assert seen is not None
    wire = job_to_wire(seen, queue_position=None, base_url="http://x", retention_s=60, now=0)
    events = await store.events_since(job.id)
    statuses = [e.data["status"] for e in events if e.kind == "status"]
    assert wire.status == statuses[-1] == JobStatus.RUNNING
    assert wire.started_at is not None
    assert [e.kind for e in events].index("model_download") > max(
        i for i, e in enumerate(events) if e.kind == "status"
    )
    release.set()
    _workflow, cleanup = await placing
    await cleanup()
    # a job whose files are all cached records no start of its own (its prompt goes at once)
    again = await store.enqueue(
        NewJob(workflow={"1": {}}, options={"models": seen.options["models"]})
    )
    second = await store.claim("w", 30)
    assert second is not None and second.id == again[0].id
    _workflow, cleanup = await placer(second, backend, None)
    await cleanup()
    after = await store.get(second.id)
    assert after is not None and after.waiting
