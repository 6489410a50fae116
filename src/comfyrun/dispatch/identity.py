"""A worker id that survives a restart, so a restarted worker takes its own jobs back at once.

A worker that holds jobs and dies leaves them `running` under its id until their leases run
out (`lease_s`, 30 s by default). Restarted with the same id, its dispatcher gives them back to
the queue the moment it starts (Dispatcher._release_stale_jobs) and the next attempt follows
the prompt ComfyUI is still running by its prompt id — no wait, no second run.

The id lives in the data dir: `<data_dir>/worker/id` (created once) plus a slot number. Each
process holds an exclusive `flock` on `<data_dir>/worker/<slot>.lock` for as long as it lives
(the kernel drops it when the process dies, kill -9 included), so two processes sharing one
data dir get different slots and never take each other's jobs, while a restarted process gets
the slot its predecessor left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid
from pathlib import Path
from typing import IO

#: Slots tried per data dir before giving up on a stable id.
MAX_SLOTS = 64


class WorkerIdentity:
    """A stable worker id and the lock that keeps it this process's."""

    def __init__(self, worker_id: str, lock: IO[str] | None) -> None:
        self.worker_id = worker_id
        self._lock = lock

    @classmethod
    def claim(cls, data_dir: Path) -> WorkerIdentity:
        """The first free slot of `data_dir`'s worker id (a fresh random id when the folder
        cannot hold one or every slot is taken)."""
        folder = data_dir / "worker"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            base = _base_id(folder / "id")
        except OSError:
            return cls(_random_id(), None)
        for slot in range(MAX_SLOTS):
            lock = (folder / f"{slot}.lock").open("a")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            return cls(f"{base}:{slot}", lock)
        return cls(_random_id(), None)

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None


def _base_id(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    fresh = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".id.{os.getpid()}")
    tmp.write_text(fresh, encoding="utf-8")
    try:
        os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's id
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip() or fresh
    finally:
        tmp.unlink(missing_ok=True)
    return fresh


def _random_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


__all__ = ["MAX_SLOTS", "WorkerIdentity"]
