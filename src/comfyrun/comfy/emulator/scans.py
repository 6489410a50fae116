"""Folder listings kept until the folder changes, as ComfyUI keeps its model lists.

ComfyUI's `folder_paths.get_filename_list` walks a model folder once and keeps the names with
the modification time of every directory it walked (`filename_list_cache`); a later call
returns them while each of those directories has the same time, so a prompt's validation
costs a `stat` per directory of the folders its nodes name, not a walk. The emulator did the
walk of every model folder (its own models/ and each extra path) and a listing of input/ for
every POST /prompt: with the folders a managed backend has, that was most of the time it took
to answer one (~2 ms here, where a bare emulator answered in 1.2-1.7).

`FolderScans` keeps a listing the same way, with one precaution ComfyUI lacks: a directory's
time is only as fine as its filesystem and the kernel's coarse clock make it (a tick of a few
ms; a second or two on some filesystems), so a change made within that of a walk can leave
the time as it was; a listing is kept only when every time it recorded is older than the walk
by more than that (`SETTLED_NS`), and walked again at every call otherwise. A file added or
removed while the server runs is therefore listed, or not, at the next call, as before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: How much older than the walk every recorded time must be for a listing to be kept: above
#: the coarsest time a directory's changes get (FAT's 2 s; ext4's and tmpfs' are ms).
SETTLED_NS = 3_000_000_000


@dataclass(frozen=True, slots=True)
class _Listing:
    names: list[str]
    #: every directory walked -> its modification time (ns), taken before it was read
    times: tuple[tuple[str, int], ...]


class FolderScans:
    """Listings of folders, each kept while the directories it walked are unchanged."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], _Listing] = {}

    def tree(self, folder: Path) -> list[str]:
        """The files under `folder`, not hidden ones, as '/'-separated paths relative to it
        (what `rglob("*")` filtered to files gives); [] when it is not a directory."""
        return self._listing(folder, TREE)

    def files(self, folder: Path) -> list[str]:
        """The names of the files directly in `folder` (links to files included)."""
        return self._listing(folder, FILES)

    def subfolders(self, folder: Path) -> list[Path]:
        """The directories directly in `folder` (links to directories included)."""
        return [folder / name for name in self._listing(folder, DIRS)]

    def _listing(self, folder: Path, kind: str) -> list[str]:
        key = (str(folder), kind)
        kept = self._kept.get(key)
        if kept is not None and _unchanged(kept.times):
            return list(kept.names)
        walked = time.time_ns()
        listing = _walk(folder, kind)
        if listing is not None and all(t < walked - SETTLED_NS for _, t in listing.times):
            self._kept[key] = listing
        else:
            self._kept.pop(key, None)
        return list(listing.names) if listing is not None else []


#: What a listing holds: every file below, not hidden (TREE); the files (FILES) or the
#: directories (DIRS) directly in the folder.
TREE, FILES, DIRS = "tree", "files", "dirs"


def _unchanged(times: tuple[tuple[str, int], ...]) -> bool:
    try:
        return all(os.stat(path).st_mtime_ns == t for path, t in times)
    except OSError:
        return False


def _walk(folder: Path, kind: str) -> _Listing | None:
    """The listing of `folder` (see TREE), each directory's time taken before it is read: a
    change made during the walk leaves a time that no longer matches."""
    names: list[str] = []
    times: list[tuple[str, int]] = []

    def visit(path: str, prefix: str) -> None:
        times.append((path, os.stat(path).st_mtime_ns))
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            try:
                if kind == DIRS:
                    if entry.is_dir():
                        names.append(entry.name)
                elif entry.is_dir(follow_symlinks=False):
                    if kind == TREE:  # (links to directories are not followed)
                        visit(entry.path, f"{prefix}{entry.name}/")
                elif entry.is_file() and not (kind == TREE and entry.name.startswith(".")):
                    names.append(prefix + entry.name)
            except OSError:
                continue  # gone while it was read: as if it had not been there

    try:
        if not folder.is_dir():
            return None
        visit(str(folder), "")
    except OSError:
        return None
    return _Listing(names, tuple(times))


__all__ = ["DIRS", "FILES", "SETTLED_NS", "TREE", "FolderScans"]
