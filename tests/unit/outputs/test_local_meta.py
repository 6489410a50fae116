"""A local object: its content type and hash in the file's `user.comfyrun` attribute, set before
it is renamed into place, with no sidecar file or folders; in a sidecar where the filesystem has
no user attributes; read from the sidecar an earlier version wrote. And a file given with its
bytes (a managed backend's output) linked into place, not copied, where it can be."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyrun.outputs import local
from comfyrun.outputs.base import FileBytes
from comfyrun.outputs.local import META_DIR, META_XATTR, LocalOutputStorage


def xattrs_supported(folder: Path) -> bool:
    probe = folder / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


async def read_back(root: Path, key: str) -> tuple[str | None, str | None]:
    """(hash, content type) as a fresh process reads them, both ways a reader reads."""
    fresh = LocalOutputStorage(root)
    stat = await fresh.stat(key)
    small = await fresh.read_small(key, 1000)
    assert stat is not None and small is not None
    assert (stat.hash, stat.content_type) == (small[0].hash, small[0].content_type)
    return stat.hash, stat.content_type


async def test_the_metadata_travels_with_the_file(tmp_path: Path) -> None:
    if not xattrs_supported(tmp_path):
        pytest.skip("this filesystem has no user attributes")
    storage = LocalOutputStorage(tmp_path)
    # a content type the key's name would not give
    stored = await storage.put_bytes("j/2/out.bin", b"data", content_type="image/webp")
    assert stored.hash is not None and stored.hash.startswith("blake3:")
    assert not (tmp_path / META_DIR).exists()  # no sidecar, no folders for one
    meta = json.loads(os.getxattr(tmp_path / "j/2/out.bin", META_XATTR))
    assert meta == {"hash": stored.hash, "content_type": "image/webp"}
    assert await read_back(tmp_path, "j/2/out.bin") == (stored.hash, "image/webp")
    streamed = await storage.put("j/3/big.bin", _chunks(), content_type="video/mp4")
    assert await read_back(tmp_path, "j/3/big.bin") == (streamed.hash, "video/mp4")
    assert not (tmp_path / META_DIR).exists()


async def _chunks() -> AsyncIterator[bytes]:
    yield b"a" * 1000
    yield b"b" * 1000


async def test_without_user_attributes_a_sidecar_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(local.os, "setxattr", unsupported)
    monkeypatch.setattr(local.os, "getxattr", unsupported)
    storage = LocalOutputStorage(tmp_path)
    stored = await storage.put_bytes("j/2/out.bin", b"data", content_type="image/webp")
    sidecar = tmp_path / META_DIR / "j/2/out.bin.json"
    assert json.loads(sidecar.read_text()) == {"hash": stored.hash, "content_type": "image/webp"}
    assert await read_back(tmp_path, "j/2/out.bin") == (stored.hash, "image/webp")
    await storage.delete("j/2/out.bin")
    assert not sidecar.exists()


async def test_an_object_an_earlier_version_stored_keeps_its_sidecar_metadata(
    tmp_path: Path,
) -> None:
    (tmp_path / "j/2").mkdir(parents=True)
    (tmp_path / "j/2/out.bin").write_bytes(b"data")  # no attribute
    sidecar = tmp_path / META_DIR / "j/2/out.bin.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"hash": "blake3:00", "content_type": "image/webp"}))
    assert await read_back(tmp_path, "j/2/out.bin") == ("blake3:00", "image/webp")
    sidecar.unlink()  # nothing known: the type from the name, no hash
    assert await read_back(tmp_path, "j/2/out.bin") == (None, "application/octet-stream")


async def test_a_file_given_with_its_bytes_is_linked_where_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`put_read` of `FileBytes`: the file becomes the object under a second name (no bytes
    written); where no link can be made (another filesystem), its bytes are written."""
    source = tmp_path / "comfy" / "out.png"
    source.parent.mkdir()
    source.write_bytes(b"\x89PNG-linked")
    storage = LocalOutputStorage(tmp_path / "store")
    stored = await storage.put_read(
        "j/2/out.png", lambda: FileBytes(source.read_bytes(), source), content_type="image/png"
    )
    assert stored is not None and stored.size_bytes == len(b"\x89PNG-linked")
    target = tmp_path / "store" / "j/2/out.png"
    assert target.stat().st_ino == source.stat().st_ino and target.stat().st_nlink == 2
    source.unlink()  # ComfyUI's name removed (dispatch.janitor): the object stays
    assert target.read_bytes() == b"\x89PNG-linked"
    assert (await LocalOutputStorage(tmp_path / "store").stat("j/2/out.png")) == stored

    def cross_device(*args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local.os, "link", cross_device)
    other = tmp_path / "comfy" / "other.png"
    other.write_bytes(b"\x89PNG-copied")
    copied = await storage.put_read(
        "j/3/other.png", lambda: FileBytes(other.read_bytes(), other), content_type="image/png"
    )
    copy = tmp_path / "store" / "j/3/other.png"
    assert copied is not None and copy.read_bytes() == b"\x89PNG-copied"
    assert copy.stat().st_ino != other.stat().st_ino and other.stat().st_nlink == 1


async def test_a_linked_file_takes_no_temporary_name_and_replaces_an_earlier_object(
    tmp_path: Path,
) -> None:
    """The usual case (a new key, the same filesystem, user attributes): the file is given its
    metadata and linked at the key directly. A key stored before is replaced (atomically, the
    long way), never left as it was."""
    if not xattrs_supported(tmp_path):
        pytest.skip("this filesystem has no user attributes")
    comfy = tmp_path / "comfy"
    comfy.mkdir()
    first, second = comfy / "a.png", comfy / "b.png"
    first.write_bytes(b"\x89PNG-first")
    second.write_bytes(b"\x89PNG-second")
    storage = LocalOutputStorage(tmp_path / "store")
    one = await storage.put_read(
        "j/2/a.png", lambda: FileBytes(first.read_bytes(), first), content_type="image/png"
    )
    assert one is not None
    assert not (tmp_path / "store" / local.TMP_DIR).exists()  # no temporary name at all
    assert await read_back(tmp_path / "store", "j/2/a.png") == (one.hash, "image/png")
    two = await storage.put_read(
        "j/2/a.png", lambda: FileBytes(second.read_bytes(), second), content_type="image/webp"
    )
    assert two is not None and two.hash != one.hash
    target = tmp_path / "store" / "j/2/a.png"
    assert target.read_bytes() == b"\x89PNG-second"
    assert target.stat().st_ino == second.stat().st_ino
    assert await read_back(tmp_path / "store", "j/2/a.png") == (two.hash, "image/webp")
    assert list((tmp_path / "store" / local.TMP_DIR).iterdir()) == []
    assert first.read_bytes() == b"\x89PNG-first" and first.stat().st_nlink == 1
