"""The log file of one managed ComfyUI process: where its output goes and how to read its end.

The child writes straight into the file (its stdout and stderr are the file), so nothing in
comfyrun has to pump a pipe and the log survives a comfyrun crash. One file per backend,
rotated once when it grows past `max_bytes` at a (re)start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_TAIL_CHUNK = 64 * 1024


class ProcessLog:
    """The log file of one backend (`<log_dir>/<name>.log`)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def open_for_child(self) -> BinaryIO:
        """Open the file for appending, rotating it first if it is too big; the caller closes it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        return self.path.open("ab", buffering=0)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def note(self, line: str) -> None:
        """Append a line of comfyrun's own (start, exit, stop) so the log reads as one story."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(f"[comfyrun] {line}\n".encode())

    def read_from(self, offset: int, limit: int = _TAIL_CHUNK) -> str:
        """Up to `limit` bytes written at or after `offset` (the end of them if there are more)."""
        try:
            with self.path.open("rb") as f:
                end = f.seek(0, os.SEEK_END)
                start = max(offset, end - limit)
                f.seek(start)
                return f.read(end - start).decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 20) -> list[str]:
        """The last `n` non-empty lines."""
        if n <= 0:
            return []
        # A progress bar redraws one line with carriage returns: keep what it showed last.
        lines = [line.rstrip("\r").split("\r")[-1] for line in self.read_from(0).split("\n")]
        return [line for line in lines if line.strip()][-n:]


__all__ = ["DEFAULT_MAX_BYTES", "ProcessLog"]
