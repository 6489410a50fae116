"""The model cache's files on disk, touched from one writer thread, never from the event loop.

Layout under `root`::

    blobs/<blake3 hex>         the bytes, once
    folders/<folder>/<name>    a symlink to its blob: what ComfyUI lists (extra model paths)
    tmp/                       downloads in progress
    index.json                 blobs (size, sha256, sources, last use) and names

Rules:
- The cache changes its state on the event loop, then hands the matching disk work to
  `CacheDisk`, which runs it on its single thread in the order it was handed over: a drop
  queued after a link undoes it, a blob is in place before any name queued after it points at
  it, and the disk follows the state change by change.
- The index is a snapshot taken on the loop (consistent: no await while it is taken); writes
  keep only the newest snapshot not yet written (a burst writes once) and are never reordered:
  an earlier snapshot never lands after a later one. Each is written aside and renamed.
- Work queued and not awaited (a lease released from sync code) runs all the same; `flush`
  waits for it, and `close` (the cache's owner, on shutdown) flushes and stops the thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import blake3

from comfyrun.aio import retrieved
from comfyrun.models.records import CachedModel
from comfyrun.models.specs import MODEL_FOLDERS

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 4 << 20

#: the index as written: {"blobs": {blake3: {...}}, "names": {"folder/name": blake3}}
Snapshot = dict[str, Any]


class CacheDisk:
    """The cache's root and its one writer thread (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfyrun-models")
        self._lock = threading.Lock()
        self._index: Snapshot | None = None  # the newest snapshot not yet written
        self._closed = False

    @property
    def folders_dir(self) -> Path:
        return self.root / "folders"

    @property
    def extra_paths_file(self) -> Path:
        return self.root / "extra_model_paths.yaml"

    @property
    def index_file(self) -> Path:
        return self.root / "index.json"

    def blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest

    def link_path(self, name: str) -> Path:
        return self.folders_dir / name

    # -- the writer thread ------------------------------------------------------------------------

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` queued on the writer thread; await it for its result. It runs even when
        its awaiter is cancelled (shielded): the state it follows changed already."""
        done = asyncio.wrap_future(self._thread.submit(fn, *args))
        done.add_done_callback(retrieved)  # its awaiter may be gone: asyncio logs no error
        return asyncio.shield(done)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """`fn(*args)` queued on the writer thread, not awaited (from sync code); a failure is
        logged, and so is work handed over after `close` (it is not done)."""
        if self._closed:
            log.warning(
                "the model cache is closed: a change after it is not written to disk",
                extra={"action": "model.disk_closed"},
            )
            return
        self._thread.submit(fn, *args).add_done_callback(_log_failure)

    def save_index(self, snapshot: Snapshot) -> None:
        """Write `snapshot` after the work queued before it (see the module docstring)."""
        with self._lock:
            queued, self._index = self._index is not None, snapshot
        if not queued:
            self.post(self._write_index)

    def _write_index(self) -> None:
        with self._lock:
            snapshot, self._index = self._index, None
        if snapshot is not None:
            # one writer: one temporary name (not in tmp/, which holds the downloads only)
            tmp = self.index_file.with_name("index.json.tmp")
            tmp.write_text(json.dumps(snapshot, indent=1), encoding="utf-8")
            os.replace(tmp, self.index_file)

    async def flush(self) -> None:
        """Wait for every piece of work queued so far."""
        await self.run(lambda: None)

    async def close(self) -> None:
        """Flush, then stop the writer thread."""
        await self.flush()
        self._closed = True
        await asyncio.to_thread(self._thread.shutdown, wait=True)

    # -- file operations (run on the writer thread) -----------------------------------------------

    def link(self, name: str, digest: str) -> None:
        """Point `name` at the blob `digest`, atomically: ComfyUI never sees a half-made name."""
        link = self.link_path(name)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
        tmp.symlink_to(self.blob(digest))
        os.replace(tmp, link)

    def unlink(self, *paths: Path) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    # -- opening (before the loop uses the cache) ---------------------------------------------------

    def open(self) -> tuple[dict[str, CachedModel], dict[str, str]]:
        """Create the folders, clear abandoned downloads, write the extra model paths yaml and
        load the index: its blobs and names, dropping entries whose files are gone."""
        for sub in ("blobs", "tmp", "folders"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS:
            (self.folders_dir / folder).mkdir(exist_ok=True)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)
        self.extra_paths_file.write_text(extra_paths_yaml(self.folders_dir), encoding="utf-8")
        return self._load_index()

    def _load_index(self) -> tuple[dict[str, CachedModel], dict[str, str]]:
        try:
            data = json.loads(self.index_file.read_text())
        except (OSError, ValueError):
            data = {}
        blobs: dict[str, CachedModel] = {}
        names: dict[str, str] = {}
        for digest, raw in (data.get("blobs") or {}).items():
            if self.blob(digest).is_file():
                blobs[digest] = CachedModel(
                    blake3=digest,
                    size_bytes=int(raw.get("size_bytes", 0)),
                    sha256=raw.get("sha256"),
                    sources=list(raw.get("sources") or []),
                    last_used=float(raw.get("last_used") or 0.0),
                    validators=dict(raw.get("validators") or {}),
                )
        for name, digest in (data.get("names") or {}).items():
            if digest in blobs and self.link_path(name).is_symlink():
                names[name] = digest
                blobs[digest].names.append(name)
        return blobs, names


def snapshot(blobs: Mapping[str, CachedModel], names: Mapping[str, str]) -> Snapshot:
    """The index of `blobs` and `names`, copied (the models change after it is taken)."""
    return {
        "blobs": {
            d: {
                "size_bytes": m.size_bytes,
                "sha256": m.sha256,
                "sources": list(m.sources),
                "last_used": m.last_used,
                "validators": {k: dict(v) for k, v in m.validators.items()},
            }
            for d, m in blobs.items()
        },
        "names": dict(names),
    }


def extra_paths_yaml(folders_dir: Path) -> str:
    """ComfyUI's extra model paths for the cache: every model folder under `folders_dir`."""
    lines = ["# written by comfyrun: its model cache, seen by the ComfyUIs it manages", "comfyrun:"]
    lines.append(f"    base_path: {json.dumps(str(folders_dir))}")
    lines += [f"    {folder}: {folder}" for folder in sorted(MODEL_FOLDERS)]
    return "\n".join(lines) + "\n"


def hash_file(path: Path, declared: str | None) -> tuple[str, str | None, int]:
    """(blake3 hex, sha256 hex when the declared hash is one, size)."""
    b3 = blake3.blake3()
    sha = hashlib.sha256() if declared is not None and declared.startswith("sha256:") else None
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
            b3.update(chunk)
            if sha is not None:
                sha.update(chunk)
    return b3.hexdigest(), sha.hexdigest() if sha is not None else None, size


def _log_failure(done: Future[Any]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.error(
            "the model cache's disk work failed: %s",
            exc,
            exc_info=exc,
            extra={"action": "model.disk_failed"},
        )


__all__ = ["CacheDisk", "Snapshot", "extra_paths_yaml", "hash_file", "snapshot"]
