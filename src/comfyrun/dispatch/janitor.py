"""ComfyUI's copies of the outputs comfyrun has stored, removed from the folders comfyrun chose
for a managed backend (`clean_backend_outputs`).

ComfyUI lists its output folder on every save to number the file (folder_paths.
get_save_image_path), so each job costs it more as the folder fills, and every output would
sit on the disk twice. Once a job's end (with its outputs) is committed, its prompt's files in
those folders are removed, in batches on a thread: the first file waits up to BATCH_S for the
others that come meanwhile, so that a busy fleet pays a trip a fraction of a second, not one
a job. A later identical prompt that ComfyUI answers from its cache names a file removed
here: the run then submits it once more, its saving nodes made new to the cache
(dispatch.collect.recached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: (the folder comfyrun chose, a file ComfyUI wrote in it)
Copy = tuple[Path, Path]
#: How long a file to remove waits for others to go in its batch (seconds).
BATCH_S = 0.25


class Janitor:
    """Removes files in the background, a batch per trip to a thread; `close` finishes."""

    def __init__(self, batch_s: float = BATCH_S) -> None:
        self._pending: list[Copy] = []
        self._task: asyncio.Task[None] | None = None
        self._batch_s = batch_s
        self._closing = asyncio.Event()
        self.removed = 0

    def discard(self, files: Iterable[Copy]) -> None:
        self._pending.extend(files)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._drain(), name="dispatch:janitor")

    async def _drain(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):  # others come meanwhile; close: at once
                async with asyncio.timeout(self._batch_s):
                    await self._closing.wait()
            batch, self._pending = self._pending, []
            try:
                self.removed += await asyncio.to_thread(remove_all, batch)
            except Exception:  # never the jobs' concern: the files stay
                log.warning("removing ComfyUI's copies of outputs failed", exc_info=True)

    async def close(self) -> None:
        """Remove what is pending (bounded: at most a few seconds)."""
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(self._task)


def remove_all(batch: list[Copy]) -> int:
    """Remove each file that is inside its folder once resolved (a link out is left)."""
    removed = 0
    roots: dict[Path, Path] = {}  # each folder resolved once a batch
    for root, path in batch:
        try:
            inside = roots.get(root) or roots.setdefault(root, root.resolve())
            if path.parent == root and plain_name(path.name):
                # in the folder itself (most outputs): a regular file there is inside, seen
                # with one look that follows no link (resolving walked every folder above)
                here = inside / path.name
                mode = here.lstat().st_mode
                if stat.S_ISREG(mode):
                    here.unlink()
                    removed += 1
                    continue
                if not stat.S_ISLNK(mode):
                    continue  # a folder, a FIFO: not a copy of an output
            resolved = path.resolve()
            if resolved.is_relative_to(inside) and resolved.is_file():
                resolved.unlink()
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def plain_name(name: str) -> bool:
    """Whether `name` names a file right in its folder (no folder of its own, no way out)."""
    return name not in ("", ".", "..") and "/" not in name and "\x00" not in name


__all__ = ["Copy", "Janitor", "plain_name", "remove_all"]
