"""Local-directory output storage on a real file system."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.media import blake3_of, collect, generated, pattern
from tests.support.threads import thread_trips

from comfyrun.errors import StorageError
from comfyrun.outputs import iterate_bytes, open_output_storage
from comfyrun.outputs.local import TMP_DIR, LocalOutputStorage


async def test_objects_are_plain_files_under_the_root(tmp_path: Path) -> None:
    storage = open_output_storage(f"file://{tmp_path}/out")
    assert isinstance(storage, LocalOutputStorage)
    await storage.put("job/9/a.png", iterate_bytes(b"png bytes"), content_type="image/png")
    assert (tmp_path / "out/job/9/a.png").read_bytes() == b"png bytes"


async def test_a_plain_path_is_a_local_storage(tmp_path: Path) -> None:
    storage = open_output_storage(str(tmp_path / "plain"))
    await storage.put("k/1/x.txt", iterate_bytes(b"x"), content_type="text/plain")
    assert (tmp_path / "plain/k/1/x.txt").is_file()


async def test_two_nodes_sharing_a_directory_agree(tmp_path: Path) -> None:
    writer, reader = LocalOutputStorage(tmp_path), LocalOutputStorage(tmp_path)
    data = pattern(4096)
    await writer.put("job/9/a.webp", iterate_bytes(data), content_type="image/webp")
    stat = await reader.stat("job/9/a.webp")
    assert stat is not None
    assert (stat.size_bytes, stat.hash, stat.content_type) == (4096, blake3_of(data), "image/webp")


async def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    storage = LocalOutputStorage(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise OSError("disk pulled")

    await storage.put("job/1/ok.bin", iterate_bytes(b"ok"), content_type="application/octet-stream")
    with pytest.raises(OSError, match="disk pulled"):
        await storage.put("job/1/bad.bin", broken(), content_type="application/octet-stream")
    assert list((tmp_path / TMP_DIR).iterdir()) == []
    assert not (tmp_path / "job/1/bad.bin").exists()


async def test_a_file_put_there_by_hand_is_still_readable(tmp_path: Path) -> None:
    (tmp_path / "job/2").mkdir(parents=True)
    (tmp_path / "job/2/clip.mp4").write_bytes(b"mp4")
    storage = LocalOutputStorage(tmp_path)
    stat = await storage.stat("job/2/clip.mp4")
    assert stat is not None and stat.content_type == "video/mp4" and stat.hash is None
    assert await collect(storage.open("job/2/clip.mp4")) == b"mp4"


async def test_directories_are_not_objects(tmp_path: Path) -> None:
    storage = LocalOutputStorage(tmp_path)
    await storage.put("job/3/a.png", iterate_bytes(b"a"), content_type="image/png")
    assert await storage.stat("job/3") is None


async def test_streaming_a_large_object_keeps_memory_bounded(tmp_path: Path) -> None:
    storage = LocalOutputStorage(tmp_path)
    size = 48 * 1024 * 1024
    tracemalloc.start()
    try:
        stored = await storage.put("job/4/big.bin", generated(size), content_type="video/mp4")
        read = 0
        async for chunk in storage.open("job/4/big.bin"):
            read += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size_bytes == read == size
    assert peak < 12 * 1024 * 1024, f"peak {peak} bytes while streaming {size} bytes"


async def test_put_bytes_makes_the_folders_removed_since_the_last_write(tmp_path: Path) -> None:
    """Folders are made when a write finds them missing: after the whole tree was removed
    (a cleanup, an operator), the next small output is stored as the first was."""
    import shutil

    root = tmp_path / "out"
    storage = LocalOutputStorage(root)
    await storage.put_bytes("job/1/a.png", b"one", content_type="image/png")
    shutil.rmtree(root)
    stored = await storage.put_bytes("job/2/deep/b.png", b"two", content_type="image/png")
    assert (root / "job/2/deep/b.png").read_bytes() == b"two"
    reader = LocalOutputStorage(root)  # not this process's recent copy: the files and meta
    stat = await reader.stat("job/2/deep/b.png")
    assert stat is not None and (stat.hash, stat.content_type) == (stored.hash, "image/png")
    assert list((root / TMP_DIR).iterdir()) == []


async def test_put_read_reads_and_writes_in_one_trip_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed backend's output is read and stored in one thread hop, not one each; a
    failing read or write is a StorageError, and nothing is left half-written."""
    trips = thread_trips(monkeypatch)
    source = tmp_path / "comfy" / "ComfyUI_00001_.png"
    source.parent.mkdir()
    source.write_bytes(b"pixels")
    storage = LocalOutputStorage(tmp_path / "out")
    stored = await storage.put_read("job/1/a.png", source.read_bytes, content_type="image/png")
    assert stored is not None and stored.size_bytes == 6
    assert len(trips) == 1
    assert (tmp_path / "out/job/1/a.png").read_bytes() == b"pixels"

    def gone() -> bytes:
        raise FileNotFoundError("removed meanwhile")

    with pytest.raises(StorageError):
        await storage.put_read("job/1/b.png", gone, content_type="image/png")
    assert not (tmp_path / "out/job/1/b.png").exists()
