"""Removing ComfyUI's copies of stored outputs: only files inside the folder named, in batches,
never failing the caller."""

from __future__ import annotations

from pathlib import Path

from comfyrun.dispatch.janitor import Janitor, remove_all


def test_only_files_inside_their_folder_are_removed(tmp_path: Path) -> None:
    root, outside = tmp_path / "output", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    mine, nested, theirs = root / "a.png", root / "sub" / "b.png", outside / "c.png"
    for path in (mine, nested, theirs):
        path.write_bytes(b"x")
    (root / "link.png").symlink_to(theirs)  # resolves out of the folder: left alone
    batch = [(root, mine), (root, nested), (root, root / "link.png"), (root, root / "gone.png")]
    batch.append((root, root / ".." / "elsewhere" / "c.png"))
    assert remove_all(batch) == 2
    assert not mine.exists() and not nested.exists()
    assert theirs.read_bytes() == b"x" and (root / "link.png").is_symlink()


async def test_what_comes_meanwhile_goes_in_the_next_batch(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.png" for i in range(5)]
    for path in files:
        path.write_bytes(b"x")
    janitor = Janitor()
    janitor.discard([(tmp_path, files[0])])
    janitor.discard([(tmp_path, p) for p in files[1:]])
    janitor.discard([])
    await janitor.close()
    assert janitor.removed == 5 and not any(p.exists() for p in files)
