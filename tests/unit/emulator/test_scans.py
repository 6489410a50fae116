"""The emulator's folder listings (comfy/emulator/scans.py): what `rglob` listed, kept while
the folders are unchanged, walked again once one changes or while one changed too lately to
be trusted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from comfyrun.comfy.emulator import scans
from comfyrun.comfy.emulator.scans import FolderScans

AN_HOUR_AGO = time.time() - 3600


def settle(*folders: Path) -> None:
    """Date every directory under `folders` an hour back: their listings may be kept."""
    for folder in folders:
        for path in [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]:
            os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders walked (each call of scans._walk)."""
    seen: list[Path] = []
    walk = scans._walk

    def counted(folder: Path, kind: str) -> object:
        seen.append(folder)
        return walk(folder, kind)

    monkeypatch.setattr(scans, "_walk", counted)
    return seen


def rglob_files(folder: Path) -> list[str]:
    """What the emulator listed before (Path.rglob, files not hidden)."""
    return sorted(
        str(f.relative_to(folder))
        for f in folder.rglob("*")
        if f.is_file() and not f.name.startswith(".")
    )


def test_tree_lists_what_rglob_listed(tmp_path: Path) -> None:
    models = tmp_path / "loras"
    (models / "sd15" / "styles").mkdir(parents=True)
    (models / ".hidden-dir").mkdir()
    (models / "a.safetensors").write_bytes(b"x")
    (models / ".hidden.safetensors").write_bytes(b"x")
    (models / "sd15" / "b.safetensors").write_bytes(b"x")
    (models / "sd15" / "styles" / "c.pt").write_bytes(b"x")
    (models / ".hidden-dir" / "d.safetensors").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.safetensors").write_bytes(b"x")
    (models / "linked-file.safetensors").symlink_to(elsewhere / "e.safetensors")
    (models / "linked-dir").symlink_to(elsewhere)  # not followed, as rglob does not
    (models / "dangling.safetensors").symlink_to(tmp_path / "gone")

    listed = sorted(FolderScans().tree(models))

    assert listed == rglob_files(models)
    assert listed == [
        ".hidden-dir/d.safetensors",
        "a.safetensors",
        "linked-file.safetensors",
        "sd15/b.safetensors",
        "sd15/styles/c.pt",
    ]


def test_files_and_subfolders_of_one_level(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.png").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "to-sub").symlink_to(tmp_path / "sub")
    found = FolderScans()

    assert sorted(found.files(tmp_path)) == [".hidden.png", "a.png"]
    assert sorted(found.subfolders(tmp_path)) == [tmp_path / "sub", tmp_path / "to-sub"]
    assert found.tree(tmp_path / "missing") == []
    assert found.files(tmp_path / "a.png") == []  # a file is no folder


def test_a_settled_listing_is_kept_until_a_folder_changes(
    tmp_path: Path, walks: list[Path]
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.ckpt").write_bytes(b"x")
    settle(tmp_path)
    found = FolderScans()

    assert found.tree(tmp_path) == ["a.ckpt"]
    assert sorted(found.tree(tmp_path)) == ["a.ckpt"]
    assert walks == [tmp_path]  # the second answer was the kept one

    (tmp_path / "sub" / "b.ckpt").write_bytes(b"x")  # a change deeper down
    assert sorted(found.tree(tmp_path)) == ["a.ckpt", "sub/b.ckpt"]
    assert len(walks) == 2

    settle(tmp_path)
    assert len(found.tree(tmp_path)) == 2
    (tmp_path / "a.ckpt").unlink()
    assert found.tree(tmp_path) == ["sub/b.ckpt"]

    settle(tmp_path)
    found.tree(tmp_path)
    (tmp_path / "sub" / "b.ckpt").unlink()
    (tmp_path / "sub").rmdir()
    assert found.tree(tmp_path) == []


def test_a_folder_changed_lately_is_walked_every_time(tmp_path: Path, walks: list[Path]) -> None:
    """A directory's time comes from a coarse clock: a change in the same tick as the walk
    could leave it as it was, so a listing whose times are that recent is not kept."""
    (tmp_path / "a.ckpt").write_bytes(b"x")  # the folder's time: now
    found = FolderScans()

    for _ in range(3):
        assert found.tree(tmp_path) == ["a.ckpt"]
    assert len(walks) == 3


def test_a_folder_that_goes_away_lists_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "v.pt").write_bytes(b"x")
    settle(folder)
    found = FolderScans()
    assert found.tree(folder) == ["v.pt"]

    (folder / "v.pt").unlink()
    folder.rmdir()

    assert found.tree(folder) == []
    folder.mkdir()  # and comes back
    (folder / "w.pt").write_bytes(b"x")
    assert found.tree(folder) == ["w.pt"]
