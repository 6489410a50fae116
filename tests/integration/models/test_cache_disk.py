"""The model cache's disk work: off the event loop, on one writer thread, in the order of the
state changes it follows; the index on disk is the state's last snapshot, and `close` leaves
nothing undone (models.disk)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfyrun.models import ModelCache, ModelRef
from comfyrun.models.disk import CacheDisk, snapshot


async def write_source(ref: ModelRef, dest: Path, progress: Any) -> None:
    """A downloader whose bytes are the source's URL (distinct per source, SIZE bytes)."""
    assert ref.url is not None
    await asyncio.to_thread(dest.write_bytes, ref.url.encode())
    progress(len(ref.url), len(ref.url))


def lora(n: int, name: str | None = None) -> ModelRef:
    return ModelRef(folder="loras", name=name or f"m{n:02}", url=f"https://h.example/m{n:04}")


SIZE = len(str(lora(0).url))


def opened(root: Path, *, budget: int | None = None) -> ModelCache:
    cache = ModelCache(root, write_source, budget_bytes=budget)
    cache.open()
    return cache


def on_disk(cache: ModelCache) -> dict[str, Any]:
    """The index file, the blobs and the names (symlink -> blob) as found on disk."""
    links = {
        str(path.relative_to(cache.folders_dir)): Path(os.readlink(path)).name
        for path in cache.folders_dir.rglob("*")
        if path.is_symlink()
    }
    return {
        "index": json.loads(cache.disk.index_file.read_text()),
        "blobs": sorted(p.name for p in (cache.root / "blobs").iterdir()),
        "links": links,
    }


def in_memory(cache: ModelCache) -> dict[str, Any]:
    models = cache.list()
    return {
        "index": snapshot({m.blake3: m for m in models}, cache._names),
        "blobs": sorted(m.blake3 for m in models),
        "links": {name: m.blake3 for m in models for name in m.names},
    }


async def test_the_disk_work_runs_on_the_writer_thread_not_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The index write, the symlinks and the unlinks ran on the event loop, blocking it.)"""
    loop_thread = threading.current_thread()
    seen: dict[str, set[str]] = {}

    def recorded(what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kw: Any) -> Any:
            seen.setdefault(what, set()).add(threading.current_thread().name)
            assert threading.current_thread() is not loop_thread, what
            return fn(*args, **kw)

        return call

    monkeypatch.setattr(CacheDisk, "_write_index", recorded("index", CacheDisk._write_index))
    monkeypatch.setattr(CacheDisk, "link", recorded("link", CacheDisk.link))
    monkeypatch.setattr(CacheDisk, "unlink", recorded("unlink", CacheDisk.unlink))
    monkeypatch.setattr(os, "replace", recorded("replace", os.replace))
    cache = opened(tmp_path, budget=SIZE + 5)  # one file fits
    (await cache.acquire([lora(1)])).release()
    lease = await cache.acquire([lora(2)])  # evicts the first
    lease.release()
    await cache.remove("loras/m02")
    await cache.close()
    assert set(seen) == {"index", "link", "unlink", "replace"}
    assert all(names == {"comfyrun-models_0"} for names in seen.values()), seen
    assert (
        on_disk(cache)
        == in_memory(cache)
        == {
            "index": {"blobs": {}, "names": {}},
            "blobs": [],
            "links": {},
        }
    )


async def test_after_a_burst_the_disk_is_the_last_state_in_order(tmp_path: Path) -> None:
    """Releases (sync), evictions, removals and re-pointed names queued while the writer is
    busy: once flushed, the index, the blobs and the names on disk are the state in memory,
    and a cache opened anew from them holds the same."""
    cache = opened(tmp_path / "c", budget=SIZE * 6)  # six files fit
    leases = [await cache.acquire([lora(n)]) for n in range(8)]  # pinned: over the budget
    busy, go = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        go.wait(10)

    cache.disk.post(hold)
    await asyncio.to_thread(busy.wait, 10)
    for lease in leases[:5]:
        lease.release()  # m00 and m01 evicted (the oldest unpinned, while over the budget)
    removals = [asyncio.ensure_future(cache.remove(f"loras/m{n:02}")) for n in (3, 4)]
    await asyncio.sleep(0)
    renamed = asyncio.ensure_future(cache.acquire([lora(9, name="m02")]))  # m02 re-pointed
    await asyncio.sleep(0)
    assert not renamed.done() and not any(r.done() for r in removals)  # waiting on the disk
    go.set()
    await asyncio.gather(*removals)
    (await renamed).release()
    await cache.flush()
    state = in_memory(cache)
    assert on_disk(cache) == state
    assert state["links"] == {
        **{f"loras/m{n:02}": cache.find(lora(n)) for n in (5, 6, 7)},
        "loras/m02": cache.find(lora(9)),
    }
    assert len(state["blobs"]) == 5  # m02's first bytes are kept, unnamed, within the budget
    reopened = opened(tmp_path / "c")
    assert in_memory(reopened) == state
    for lease in leases[5:]:
        lease.release()
    await cache.close()


async def test_close_does_the_disk_work_of_a_lease_released_before_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = opened(tmp_path, budget=SIZE + 5)
    first = await cache.acquire([lora(1)])
    second = await cache.acquire([lora(2)])
    first.release()  # over the budget: the first file goes, on the writer thread
    await cache.close()
    assert on_disk(cache) == in_memory(cache)
    assert not (cache.folders_dir / "loras" / "m01").exists() and len(cache.list()) == 1
    with caplog.at_level(logging.WARNING, logger="comfyrun.models.disk"):
        second.release()  # after close: the state changes; its disk work is not done, loudly
    assert [r.action for r in caplog.records] == ["model.disk_closed"]  # type: ignore[attr-defined]


async def test_the_app_closes_its_cache_on_shutdown_with_its_disk_work_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.api import asgi_app, memory_settings

    done: list[str] = []
    async with asgi_app(memory_settings(tmp_path)) as (_app, _client, ctx):
        cache: ModelCache = ctx.extras["models"]
        cache.disk.post(done.append, "queued before shutdown")  # as a released lease's work
    assert done == ["queued before shutdown"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyrun.models.disk"):
        cache.disk.post(done.append, "after")
    assert done == ["queued before shutdown"]
    assert [r.action for r in caplog.records] == ["model.disk_closed"]  # type: ignore[attr-defined]


async def test_a_name_that_could_not_be_linked_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The state changes before the writer links the name: a link that failed left the name
    known, and the next job for it was told it was there.)"""
    cache = opened(tmp_path)
    real_link = CacheDisk.link
    failures = [OSError(30, "Read-only file system")]

    def link(disk: CacheDisk, name: str, digest: str) -> None:
        if failures:
            raise failures.pop()
        real_link(disk, name, digest)

    monkeypatch.setattr(CacheDisk, "link", link)
    with pytest.raises(OSError, match="Read-only"):
        await cache.acquire([lora(1)])
    (model,) = cache.list()
    assert model.names == [] and model.in_use == 0  # the bytes kept, unnamed, unpinned
    (await cache.acquire([lora(1)])).release()
    await cache.flush()
    assert (cache.folders_dir / "loras" / "m01").read_bytes() == str(lora(1).url).encode()
    assert on_disk(cache) == in_memory(cache)


async def test_a_blob_that_could_not_be_moved_in_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The blob is known before the writer moves it in: a move that failed left it known.)"""
    cache = opened(tmp_path)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).parent.name == "blobs":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        await cache.acquire([lora(1)])
    await cache.flush()
    assert cache.list() == [] and on_disk(cache) == in_memory(cache)
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(os, "replace", real_replace)
    (await cache.acquire([lora(1)])).release()
    assert len(cache.list()) == 1


async def test_listeners_hear_of_a_name_once_it_is_on_disk(tmp_path: Path) -> None:
    """The catalog asks the backends for their model lists when told (backends.catalog): told
    before the writer made the link, a ComfyUI asked at once would not list the file."""
    cache = opened(tmp_path)
    (await cache.acquire([lora(1)])).release()  # its bytes cached
    await cache.flush()
    heard: list[bool] = []
    link = cache.folders_dir / "loras" / "other"
    cache.on_names_changed(lambda: heard.append(link.is_symlink()))
    busy, go = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        go.wait(10)

    cache.disk.post(hold)
    await asyncio.to_thread(busy.wait, 10)
    acquired = asyncio.ensure_future(cache.acquire([lora(1, name="other")]))  # cached bytes
    await asyncio.sleep(0)
    assert "loras/other" in cache._names  # in the state, its link queued behind `hold`
    await asyncio.sleep(0.05)
    assert heard == [] and not acquired.done()
    go.set()
    (await acquired).release()
    await cache.flush()
    assert heard == [True]
    await cache.remove("loras/other")
    await cache.flush()
    assert heard == [True, False]  # told once the link is gone
    await cache.close()
