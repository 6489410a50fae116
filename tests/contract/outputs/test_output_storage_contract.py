"""Every output storage (local directory, in-memory, S3): the same behaviour."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator

import pytest
from tests.support.media import blake3_of, chunked, collect, pattern

from comfyrun.errors import InvalidRequest, NotFound
from comfyrun.outputs import (
    OutputStorage,
    iterate_bytes,
    job_prefix,
    output_key,
    put_read,
    read_inline,
)


async def test_put_then_read_back_bytes_size_hash_and_type(storage: OutputStorage) -> None:
    data = pattern(200_003)
    stored = await storage.put("job/9/out.png", chunked(data), content_type="image/png")
    assert stored.key == "job/9/out.png"
    assert stored.size_bytes == len(data)
    assert stored.hash == blake3_of(data)
    assert stored.content_type == "image/png"
    assert await collect(storage.open("job/9/out.png")) == data
    stat = await storage.stat("job/9/out.png")
    assert stat is not None
    assert (stat.key, stat.size_bytes, stat.content_type) == (
        "job/9/out.png",
        len(data),
        "image/png",
    )
    assert stat.hash in (None, blake3_of(data))


async def test_put_bytes_and_read_small(storage: OutputStorage) -> None:
    data = pattern(5_000)
    stored = await storage.put_bytes("job/3/small.png", data, content_type="image/png")
    assert (stored.size_bytes, stored.hash, stored.content_type) == (
        len(data),
        blake3_of(data),
        "image/png",
    )
    assert await collect(storage.open("job/3/small.png")) == data
    found = await storage.read_small("job/3/small.png", 5_000)
    assert found is not None
    assert found[1] == data
    assert (found[0].size_bytes, found[0].content_type) == (len(data), "image/png")
    too_big = await storage.read_small("job/3/small.png", 4_999)
    assert too_big is not None
    assert too_big[1] is None and too_big[0].size_bytes == len(data)
    assert await storage.read_small("job/3/missing.png", 10) is None
    replaced = await storage.put_bytes("job/3/small.png", b"x", content_type="text/plain")
    assert replaced.size_bytes == 1
    assert await collect(storage.open("job/3/small.png")) == b"x"


async def test_empty_object(storage: OutputStorage) -> None:
    stored = await storage.put("j/1/empty.txt", iterate_bytes(b""), content_type="text/plain")
    assert stored.size_bytes == 0
    assert stored.hash == blake3_of(b"")
    assert await collect(storage.open("j/1/empty.txt")) == b""


async def test_put_replaces_the_object(storage: OutputStorage) -> None:
    await storage.put("j/1/a.txt", iterate_bytes(b"first version"), content_type="text/plain")
    await storage.put("j/1/a.txt", iterate_bytes(b"second"), content_type="application/json")
    assert await collect(storage.open("j/1/a.txt")) == b"second"
    stat = await storage.stat("j/1/a.txt")
    assert stat is not None and stat.size_bytes == 6 and stat.content_type == "application/json"


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, slice(0, 10)),
        (5, None, slice(5, None)),
        (99_990, 50, slice(99_990, None)),
        (1234, 1, slice(1234, 1235)),
        (100_000, None, slice(0, 0)),
        (100_500, 10, slice(0, 0)),
    ],
)
async def test_ranged_reads(
    storage: OutputStorage, offset: int, length: int | None, expected: slice
) -> None:
    data = pattern(100_000)
    await storage.put("j/2/r.bin", iterate_bytes(data), content_type="application/octet-stream")
    got = await collect(storage.open("j/2/r.bin", offset=offset, length=length))
    assert got == data[expected]


async def test_zero_length_read_of_existing_object(storage: OutputStorage) -> None:
    await storage.put("j/2/z.bin", iterate_bytes(b"abc"), content_type="application/octet-stream")
    assert await collect(storage.open("j/2/z.bin", offset=1, length=0)) == b""


async def test_missing_objects(storage: OutputStorage) -> None:
    assert await storage.stat("nope/1/x.png") is None
    with pytest.raises(NotFound):
        await collect(storage.open("nope/1/x.png"))
    with pytest.raises(NotFound):
        await read_inline(storage, "nope/1/x.png", 100)
    await storage.delete("nope/1/x.png")  # not an error


async def test_delete(storage: OutputStorage) -> None:
    await storage.put("j/3/a.png", iterate_bytes(b"png"), content_type="image/png")
    await storage.delete("j/3/a.png")
    assert await storage.stat("j/3/a.png") is None
    with pytest.raises(NotFound):
        await collect(storage.open("j/3/a.png"))


async def test_delete_prefix_removes_one_job_only(storage: OutputStorage) -> None:
    for key in ("job1/9/a.png", "job1/9/b.png", "job1/12/c.mp4", "job10/9/a.png", "job2/9/a.png"):
        await storage.put(key, iterate_bytes(key.encode()), content_type="image/png")
    assert await storage.delete_prefix(job_prefix("job1")) == 3
    for key in ("job1/9/a.png", "job1/9/b.png", "job1/12/c.mp4"):
        assert await storage.stat(key) is None
    for key in ("job10/9/a.png", "job2/9/a.png"):
        assert await collect(storage.open(key)) == key.encode()
    assert await storage.delete_prefix("job1/") == 0


async def test_two_deletes_of_one_prefix_at_once_both_end(storage: OutputStorage) -> None:
    """(two DELETEs of one job at once: the local storage's count walked a folder the other
    was removing, a FileNotFoundError, a 500)"""
    for round_ in range(8):
        for n in range(60):
            key = f"job{round_}/{n % 20}/f{n}.png"
            await storage.put_bytes(key, b"x", content_type="image/png")
        counts = await asyncio.gather(
            storage.delete_prefix(f"job{round_}/"), storage.delete_prefix(f"job{round_}/")
        )
        assert all(0 <= c <= 60 for c in counts)
        assert await storage.stat(f"job{round_}/0/f0.png") is None


async def test_each_job_keeps_its_own_copy(storage: OutputStorage) -> None:
    # ComfyUI re-reports the same file for a cached rerun; both jobs store it under their own key.
    data = pattern(5000)
    first = output_key("job-a", "9", "ComfyUI_00001_.png")
    second = output_key("job-b", "9", "ComfyUI_00001_.png")
    assert first != second
    await storage.put(first, iterate_bytes(data), content_type="image/png")
    await storage.put(second, iterate_bytes(data), content_type="image/png")
    await storage.delete_prefix(job_prefix("job-a"))
    assert await collect(storage.open(second)) == data


async def test_prefix_must_end_with_a_slash(storage: OutputStorage) -> None:
    await storage.put("job1/9/a.png", iterate_bytes(b"x"), content_type="image/png")
    with pytest.raises(InvalidRequest):
        await storage.delete_prefix("job1")
    with pytest.raises(InvalidRequest):
        await storage.delete_prefix("/")
    assert await storage.stat("job1/9/a.png") is not None


@pytest.mark.parametrize(
    "key", ["../x", "/abs/x", "a//b", "a/./b", "a/../b", "a\\b", "a/b\x00", ".comfyrun-meta/x", ""]
)
async def test_unsafe_keys_are_refused(storage: OutputStorage, key: str) -> None:
    with pytest.raises(InvalidRequest):
        await storage.put(key, iterate_bytes(b"x"), content_type="text/plain")
    with pytest.raises(InvalidRequest):
        await storage.stat(key)
    with pytest.raises(InvalidRequest):
        await collect(storage.open(key))


async def test_unicode_and_spaces_in_keys(storage: OutputStorage) -> None:
    key = "job/9/fotó final (1).png"
    await storage.put(key, iterate_bytes(b"data"), content_type="image/png")
    assert await collect(storage.open(key)) == b"data"


async def test_url_is_none_or_a_future_expiring_link(storage: OutputStorage) -> None:
    await storage.put("j/4/a.png", iterate_bytes(b"x"), content_type="image/png")
    url, expires = await storage.url("j/4/a.png", expires_s=60)
    if storage.scheme in ("file", "memory"):
        assert (url, expires) == (None, None)
    else:
        assert url is not None and url.startswith("http")
        assert expires is not None and time.time() < expires <= time.time() + 61


async def test_read_inline_respects_the_cap(storage: OutputStorage) -> None:
    data = pattern(1000)
    await storage.put("j/5/a.png", iterate_bytes(data), content_type="image/png")
    assert await read_inline(storage, "j/5/a.png", 1000) == base64.b64encode(data).decode()
    assert await read_inline(storage, "j/5/a.png", 999) is None


async def test_a_failing_stream_leaves_nothing_behind(storage: OutputStorage) -> None:
    await storage.put("j/6/a.bin", iterate_bytes(b"old"), content_type="application/octet-stream")

    async def broken() -> AsyncIterator[bytes]:
        yield pattern(100_000)
        raise RuntimeError("upstream died")

    with pytest.raises(RuntimeError):
        await storage.put("j/6/a.bin", broken(), content_type="application/octet-stream")
    with pytest.raises(RuntimeError):
        await storage.put("j/6/new.bin", broken(), content_type="application/octet-stream")
    assert await collect(storage.open("j/6/a.bin")) == b"old"
    assert await storage.stat("j/6/new.bin") is None


async def test_stopping_a_read_early_is_safe(storage: OutputStorage) -> None:
    data = pattern(3 * (1 << 20))
    await storage.put("j/7/big.bin", iterate_bytes(data), content_type="application/octet-stream")
    stream = storage.open("j/7/big.bin")
    first = await stream.__anext__()
    assert data.startswith(first)
    await stream.aclose()  # type: ignore[attr-defined]
    await storage.delete("j/7/big.bin")
    assert await storage.stat("j/7/big.bin") is None


async def test_read_small_after_a_delete_or_a_replace_finds_what_is_there(
    storage: OutputStorage,
) -> None:
    """Whatever a storage keeps close at hand, a delete, a prefix delete and a streamed
    replace are seen at once by the same storage."""
    await storage.put_bytes("j/5/a.txt", b"one", content_type="text/plain")
    await storage.put_bytes("j/5/b.txt", b"two", content_type="text/plain")
    await storage.put_bytes("j/6/c.txt", b"three", content_type="text/plain")
    found = await storage.read_small("j/5/a.txt", 100)
    assert found is not None and found[1] == b"one"
    await storage.delete("j/5/a.txt")
    assert await storage.read_small("j/5/a.txt", 100) is None
    await storage.put("j/6/c.txt", iterate_bytes(b"replaced"), content_type="text/plain")
    found = await storage.read_small("j/6/c.txt", 100)
    assert found is not None and found[1] == b"replaced"
    await storage.delete_prefix("j/5/")
    assert await storage.read_small("j/5/b.txt", 100) is None
    found = await storage.read_small("j/6/c.txt", 100)
    assert found is not None and found[1] == b"replaced"


async def test_put_read_stores_what_a_blocking_read_returns(storage: OutputStorage) -> None:
    """`put_read`: the bytes of a blocking read (a managed backend's file), read off the event
    loop; a read that finds nothing stores nothing."""
    loop_thread = threading.get_ident()
    read_on: list[int] = []

    def read() -> bytes | None:
        read_on.append(threading.get_ident())
        return b"png bytes"

    stored = await put_read(storage, "job/1/a.png", read, content_type="image/png")
    assert stored is not None
    assert (stored.size_bytes, stored.hash) == (9, blake3_of(b"png bytes"))
    assert read_on and read_on[0] != loop_thread
    found = await storage.read_small("job/1/a.png", 100)
    assert found is not None and found[1] == b"png bytes"
    assert found[0].content_type == "image/png"
    assert await put_read(storage, "job/1/b.png", lambda: None, content_type="image/png") is None
    assert await storage.stat("job/1/b.png") is None


async def test_put_read_on_the_loop_stores_the_same(storage: OutputStorage) -> None:
    """`put_read` with `on_loop` (a read the caller knows is quick): read on the loop's own
    thread, stored as any other."""
    loop_thread = threading.get_ident()
    read_on: list[int] = []

    def read() -> bytes:
        read_on.append(threading.get_ident())
        return b"small png"

    stored = await put_read(storage, "job/2/a.png", read, content_type="image/png", on_loop=True)
    assert stored is not None
    assert (stored.size_bytes, stored.hash) == (9, blake3_of(b"small png"))
    assert read_on == [loop_thread]
    found = await storage.read_small("job/2/a.png", 100)
    assert found is not None and found[1] == b"small png"
    assert found[0].content_type == "image/png"
    none = await put_read(storage, "job/2/b.png", lambda: None, content_type="x", on_loop=True)
    assert none is None and await storage.stat("job/2/b.png") is None
