"""A managed backend's output read from its folder (dispatch.collect._read_local): the file's
bytes when it is small, and never a file outside the folder (through a link or `..`), a
folder, or a FIFO (which must not hold the thread); None sends the caller to ComfyUI's /view.
And where each output is stored from (dispatch.collect.collect_outputs): a small one on this
machine's disk by the event loop itself, any other in a thread."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.threads import thread_trips

from comfyrun.comfy.outputs import FileRef
from comfyrun.core.job import Job
from comfyrun.dispatch import collect
from comfyrun.outputs.local import LocalOutputStorage


def read(found: Any, r: FileRef, most: int = collect.SMALL) -> Any:
    return collect._read_local(found, r, most)


def backend(root: Path) -> Any:
    return SimpleNamespace(output_dir=root, temp_dir=root.parent / "temp")


def ref(filename: str, subfolder: str = "") -> FileRef:
    return FileRef(filename=filename, subfolder=subfolder, type="output", node_id="9", key="images")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "output"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"\x89PNG-a")
    (folder / "sub" / "b.png").write_bytes(b"\x89PNG-b")
    (tmp_path / "secret.txt").write_bytes(b"not yours")
    return folder


def test_a_file_in_the_folder_or_a_subfolder_is_read(root: Path) -> None:
    assert read(backend(root), ref("a.png")) == (root / "a.png", b"\x89PNG-a")
    found = read(backend(root), ref("b.png", "sub"))
    assert found == (root / "sub" / "b.png", b"\x89PNG-b")


def test_a_link_is_followed_only_inside_the_folder(root: Path) -> None:
    (root / "in.png").symlink_to(root / "a.png")
    (root / "out.png").symlink_to(root.parent / "secret.txt")
    found = read(backend(root), ref("in.png"))
    assert found is not None and found[1] == b"\x89PNG-a"
    assert read(backend(root), ref("out.png")) is None
    assert read(backend(root), ref("secret.txt", "..")) is None


def test_what_is_not_a_small_regular_file(
    root: Path,
) -> None:
    assert read(backend(root), ref("missing.png")) is None
    assert read(backend(root), ref("sub")) is None  # a folder
    os.mkfifo(root / "pipe.png")
    assert read(backend(root), ref("pipe.png")) is None  # and did not wait
    assert read(backend(root), ref("a.png"), 3) == (root / "a.png", None)  # past `most`
    assert read(backend(root), ref("a.png"), 7) == (root / "a.png", b"\x89PNG-a")


def test_a_backend_read_over_http_has_no_folder(root: Path) -> None:
    assert read(SimpleNamespace(output_dir=None, temp_dir=None), ref("a.png")) is None


async def test_a_small_output_on_this_machines_disk_is_stored_by_the_loop_itself(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ON_LOOP bytes, on a disk of this machine (outputs.local_disk): read, hashed and
    linked into the storage with no trip to a thread; a larger one, or one on another disk
    (a network share), in one trip, stored the same."""
    trips = thread_trips(monkeypatch)
    monkeypatch.setattr(collect, "on_local_disk", lambda path: True)
    storage = LocalOutputStorage(tmp_path / "stored")
    storage.on_local_disk = True
    found = SimpleNamespace(output_dir=root, temp_dir=root.parent / "temp", chosen_dirs={"output"})
    (root / "big.png").write_bytes(b"B" * (collect.ON_LOOP + 1))
    job = Job(id="j1", workflow={})

    async def stored(name: str) -> bytes:
        trips.clear()
        outputs = {"9": [ref(name)]}
        (out,) = await collect.collect_outputs(
            job, outputs, backend=found, client=None, storage=storage, inline_cap=0, cleaned=True
        )
        assert out.storage_key is not None
        return (storage.root / out.storage_key).read_bytes()

    assert await stored("a.png") == b"\x89PNG-a"
    assert trips == []
    assert (root / "a.png").stat().st_nlink == 2  # linked, as in a thread
    assert await stored("big.png") == b"B" * (collect.ON_LOOP + 1)
    assert trips == ["read_and_put"]
    monkeypatch.setattr(collect, "on_local_disk", lambda path: False)  # the backend's: a share
    (root / "c.png").write_bytes(b"\x89PNG-c")
    assert await stored("c.png") == b"\x89PNG-c"
    assert trips == ["read_and_put"]
    monkeypatch.setattr(collect, "on_local_disk", lambda path: True)
    storage.on_local_disk = False  # the storage's folder on a share
    (root / "d.png").write_bytes(b"\x89PNG-d")
    assert await stored("d.png") == b"\x89PNG-d"
    assert trips == ["read_and_put"]
    (root / "e.png").write_bytes(b"E" * (collect.ON_LOOP + 1))  # one trip, not one a cap
    assert await stored("e.png") == b"E" * (collect.ON_LOOP + 1)
    assert trips == ["read_and_put"]
