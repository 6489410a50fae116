"""Recently written small objects kept in memory: bounded in bytes and in age."""

from __future__ import annotations

import pytest

from comfyrun.outputs import recent as recent_module
from comfyrun.outputs.base import StoredObject
from comfyrun.outputs.local import LocalOutputStorage
from comfyrun.outputs.recent import Recent


def obj(key: str, data: bytes) -> StoredObject:
    return StoredObject(key, len(data), None, "application/octet-stream")


def test_the_oldest_go_first_when_over_budget() -> None:
    recent = Recent(budget=1600)
    for i in range(5):
        recent.add(f"k{i}", obj(f"k{i}", b"x" * 100), b"x" * 100)
    recent.add("big", obj("big", b"y" * 1000), b"y" * 101)  # too big for 1/16 of the budget
    assert recent.get("big") is None
    for i in range(20):
        recent.add(f"n{i}", obj(f"n{i}", b"z" * 100), b"z" * 100)
    assert recent.get("k0") is None  # pushed out by the newer ones
    assert recent.get("n19") is not None
    kept = [k for k in [f"n{i}" for i in range(20)] if recent.get(k) is not None]
    assert len(kept) == 16 and kept[-1] == "n19"


def test_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(recent_module.time, "monotonic", lambda: now[0])
    recent = Recent(ttl_s=30)
    recent.add("a", obj("a", b"1"), b"1")
    now[0] += 29
    assert recent.get("a") is not None
    now[0] += 2
    assert recent.get("a") is None


async def test_a_download_right_after_the_write_needs_no_disk(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    storage = LocalOutputStorage(root)
    await storage.put_bytes("j/1/out.png", b"png!", content_type="image/png")
    (root / "j/1/out.png").unlink()  # gone from the disk behind the storage's back
    found = await storage.read_small("j/1/out.png", 100)
    assert found is not None and found[1] == b"png!" and found[0].content_type == "image/png"
    fresh = LocalOutputStorage(root)  # another process sees the disk
    assert await fresh.read_small("j/1/out.png", 100) is None


async def test_a_stat_right_after_the_write_needs_no_disk_either(tmp_path: object) -> None:
    """ComfyUI's /view asks whether an output is stored before it reads it: a file just
    written is known from memory, as its read is; deleted through the storage, it is gone."""
    from pathlib import Path

    root = Path(str(tmp_path))
    storage = LocalOutputStorage(root)
    await storage.put_bytes("j/1/out.png", b"png!", content_type="image/png")
    (root / "j/1/out.png").unlink()  # gone from the disk behind the storage's back
    found = await storage.stat("j/1/out.png")
    assert found is not None and found.size_bytes == 4 and found.content_type == "image/png"
    assert await LocalOutputStorage(root).stat("j/1/out.png") is None
    await storage.put_bytes("j/1/b.png", b"png!", content_type="image/png")
    await storage.delete("j/1/b.png")
    assert await storage.stat("j/1/b.png") is None
