"""Whether a folder lies on a disk of this machine (not a network share), from the mount table.

A file call on such a disk, for a small file the page cache holds (one ComfyUI just wrote), takes
microseconds; one on NFS, SMB or a FUSE filesystem waits for a server. The event loop makes the
first kind itself where that is cheaper than a trip to a thread (dispatch.collect), never the
second.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

#: Filesystems whose calls never wait for another machine.
LOCAL_FILESYSTEMS = frozenset(
    {
        "bcachefs",
        "btrfs",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "jfs",
        "overlay",
        "ramfs",
        "reiserfs",
        "tmpfs",
        "xfs",
        "zfs",
    }
)
MOUNTS = Path("/proc/self/mounts")
_OCTAL = re.compile(r"\\([0-7]{3})")


@functools.lru_cache(maxsize=64)
def on_local_disk(path: Path) -> bool:
    """Whether `path` (which need not exist yet) lies on a filesystem of LOCAL_FILESYSTEMS, by
    the mount table: False where there is none to read (not Linux) or the filesystem is any
    other. Read once a folder (the answer is kept): a folder mounted elsewhere afterwards is not
    seen."""
    try:
        table = MOUNTS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return filesystem_of(os.path.realpath(path), table) in LOCAL_FILESYSTEMS


def filesystem_of(path: str, table: str) -> str | None:
    """The type of the filesystem mounted last on the deepest mount point holding `path` (an
    absolute path, resolved), by `table` (/proc/self/mounts' text); None when none holds it."""
    best: str | None = None
    kind: str | None = None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescaped(fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best)):
            best, kind = point, fields[2]
    return kind


def _unescaped(field: str) -> str:
    """A mount table's field with its octal escapes (a space is \\040) undone."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


__all__ = ["LOCAL_FILESYSTEMS", "filesystem_of", "on_local_disk"]
