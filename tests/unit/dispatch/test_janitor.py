"""Removing ComfyUI's copies of stored outputs: only files inside the folder named, in batches,
never failing the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


async def test_files_that_come_within_the_batch_time_go_in_one_trip(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A busy fleet pays one trip to a thread per batch time, not one per job; what is still
    waiting when the janitor closes is removed then, without waiting out the batch time."""
    import asyncio

    from comfyrun.dispatch import janitor as janitor_module

    trips: list[int] = []
    real = janitor_module.remove_all

    def counting(batch: list[Any]) -> int:
        removed = real(batch)
        trips.append(len(batch))  # after the removal: the test looks at the files once it sees this
        return removed

    monkeypatch.setattr(janitor_module, "remove_all", counting)
    files = [tmp_path / f"{i}.png" for i in range(8)]
    for path in files:
        path.write_bytes(b"x")
    janitor = Janitor(batch_s=1.0)
    for path in files[:6]:  # one a job, over ~0.06 s
        janitor.discard([(tmp_path, path)])
        await asyncio.sleep(0.01)
    assert trips == [] and all(p.exists() for p in files)  # still within the batch time
    async with asyncio.timeout(5):
        while not trips:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert trips == [6] and not any(p.exists() for p in files[:6])
    slow = Janitor(batch_s=60.0)
    slow.discard([(tmp_path, p) for p in files[6:]])
    async with asyncio.timeout(5):
        await slow.close()  # not 60 s
    assert trips == [6, 2] and not any(p.exists() for p in files)


def test_a_link_in_the_folder_is_followed_the_long_way_and_a_folder_is_left(
    tmp_path: Path,
) -> None:
    """A file right in the folder is removed with one look at it; a link there is resolved
    as before (to a file inside: that file goes; out of the folder: nothing), a folder that
    bears an output's name is no copy of one."""
    root = tmp_path / "output"
    root.mkdir()
    target, pointing = root / "target.png", root / "pointing.png"
    target.write_bytes(b"x")
    pointing.symlink_to(target)
    (root / "folder.png").mkdir()
    via = tmp_path / "via"
    via.symlink_to(root)  # the folder named through a link: resolved once, files still found
    plain = root / "plain.png"
    plain.write_bytes(b"x")
    batch = [(root, pointing), (root, root / "folder.png"), (via, via / "plain.png")]
    assert remove_all(batch) == 2
    assert not target.exists() and pointing.is_symlink() and not plain.exists()
    assert (root / "folder.png").is_dir()
