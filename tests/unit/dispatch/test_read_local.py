"""A managed backend's output read from its folder (dispatch.collect._read_local): the file's
bytes when it is small, and never a file outside the folder (through a link or `..`), a
folder, or a FIFO (which must not hold the thread); None sends the caller to ComfyUI's /view."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from comfyrun.comfy.outputs import FileRef
from comfyrun.dispatch import collect


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
    assert collect._read_local(backend(root), ref("a.png")) == (root / "a.png", b"\x89PNG-a")
    found = collect._read_local(backend(root), ref("b.png", "sub"))
    assert found == (root / "sub" / "b.png", b"\x89PNG-b")


def test_a_link_is_followed_only_inside_the_folder(root: Path) -> None:
    (root / "in.png").symlink_to(root / "a.png")
    (root / "out.png").symlink_to(root.parent / "secret.txt")
    found = collect._read_local(backend(root), ref("in.png"))
    assert found is not None and found[1] == b"\x89PNG-a"
    assert collect._read_local(backend(root), ref("out.png")) is None
    assert collect._read_local(backend(root), ref("secret.txt", "..")) is None


def test_what_is_not_a_small_regular_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert collect._read_local(backend(root), ref("missing.png")) is None
    assert collect._read_local(backend(root), ref("sub")) is None  # a folder
    os.mkfifo(root / "pipe.png")
    assert collect._read_local(backend(root), ref("pipe.png")) is None  # and did not wait
    monkeypatch.setattr(collect, "SMALL", 3)
    assert collect._read_local(backend(root), ref("a.png")) == (root / "a.png", None)


def test_a_backend_read_over_http_has_no_folder(root: Path) -> None:
    assert (
        collect._read_local(SimpleNamespace(output_dir=None, temp_dir=None), ref("a.png")) is None
    )
