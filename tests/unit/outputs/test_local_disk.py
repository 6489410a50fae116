"""Whether a folder lies on this machine's own disk (outputs.local_disk), from the mount
table: the deepest mount point holding it decides, the one mounted last where several share
it; a network share, /proc, or no table at all is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyrun.outputs import local_disk
from comfyrun.outputs.local_disk import filesystem_of, on_local_disk

TABLE = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,relatime 0 0
server:/export /mnt/share nfs4 rw,relatime 0 0
/dev/vdb /mnt/share/local xfs rw 0 0
tmpfs /mnt/over tmpfs rw 0 0
server:/other /mnt/over fuse.sshfs rw 0 0
/dev/vdc /mnt/my\\040disk ext4 rw 0 0
"""


def test_the_deepest_mount_point_decides_the_last_mounted_on_top() -> None:
    assert filesystem_of("/", TABLE) == "ext4"
    assert filesystem_of("/work/data/outputs", TABLE) == "ext4"
    assert filesystem_of("/mnt/share/jobs", TABLE) == "nfs4"
    assert filesystem_of("/mnt/share", TABLE) == "nfs4"
    assert filesystem_of("/mnt/share/local/jobs", TABLE) == "xfs"
    assert filesystem_of("/mnt/sharedisk/x", TABLE) == "ext4"  # a prefix, not a folder of it
    assert filesystem_of("/mnt/over/x", TABLE) == "fuse.sshfs"  # mounted over the tmpfs
    assert filesystem_of("/mnt/my disk/x", TABLE) == "ext4"  # its space escaped as \040
    assert filesystem_of("/x", "proc /proc proc rw 0 0\n\nshort line\n") is None


def test_a_share_or_a_virtual_filesystem_or_no_table_is_not_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "mounts"
    table.write_text(TABLE)
    monkeypatch.setattr(local_disk, "MOUNTS", table)
    on_local_disk.cache_clear()
    try:
        assert on_local_disk(Path("/work/out"))
        assert on_local_disk(Path("/mnt/share/local/out"))
        assert not on_local_disk(Path("/mnt/share/out"))
        assert not on_local_disk(Path("/mnt/over/out"))
        assert not on_local_disk(Path("/proc/self"))
        monkeypatch.setattr(local_disk, "MOUNTS", tmp_path / "none")  # not Linux
        assert not on_local_disk(Path("/elsewhere"))
    finally:
        on_local_disk.cache_clear()
