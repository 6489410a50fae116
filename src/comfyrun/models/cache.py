"""comfyrun's model cache: files stored once by their blake3 hash, seen by ComfyUI by name
(the layout on disk: models.disk; revalidating a URL: models.refresh).

Rules:
- A model is known by its hash when the caller gives one, else by its source (URL or asset):
  a second job with the same source downloads nothing.
- Concurrent requests for one model share one download (models.flights).
- The bytes are hashed as they land; a declared hash that does not match fails with
  HashMismatch and keeps nothing.
- `acquire` pins the files a job uses until its lease is released. Over the byte budget, the
  least recently used unpinned files are evicted (never a pinned one, never the file just
  fetched); a name in use by a running job is never re-pointed at other bytes.
- The state (blobs, names, pins) changes on the event loop, each check and its change with no
  await between; the files follow on the cache's writer thread, in the same order
  (models.disk): the loop never blocks on the disk, and a name appears only once its blob is
  in place. `acquire` returns once its names are on disk; a released lease's disk work runs
  later (`close` waits for it).
- ComfyUI rescans a folder whose mtime changed, so files linked while it runs are listed
  without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from comfyrun.errors import Conflict, HashMismatch, NotFound
from comfyrun.models.disk import CacheDisk, extra_paths_yaml, hash_file, snapshot
from comfyrun.models.flights import Flights
from comfyrun.models.records import (
    CachedModel,
    Downloader,
    ModelProgress,
    Progress,
    Validators,
)
from comfyrun.models.refresh import refresh
from comfyrun.models.specs import ModelRef

log = logging.getLogger(__name__)


class Lease:
    """The files one job uses, pinned until `release()` (idempotent; sync: the disk work it
    leads to runs on the cache's writer thread)."""

    def __init__(self, cache: ModelCache, pinned: list[tuple[str, str]]) -> None:
        self._cache = cache
        self._pinned = pinned

    def release(self) -> None:
        pinned, self._pinned = self._pinned, []
        for digest, name in pinned:
            self._cache._unpin(digest, name)


class ModelCache:
    """See the module docstring. `budget_bytes=None`: no eviction."""

    def __init__(
        self,
        root: Path,
        download: Downloader,
        *,
        budget_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.disk = CacheDisk(root)
        self.budget_bytes = budget_bytes
        self._download = download
        self._clock = clock
        self._blobs: dict[str, CachedModel] = {}
        self._names: dict[str, str] = {}  # "folder/name" -> blake3
        self._pins: Counter[str] = Counter()
        self._name_pins: Counter[str] = Counter()
        self._name_listeners: list[Callable[[], None]] = []
        self._flights = Flights(self._fetch)
        self.downloads = 0  # finished downloads (for tests and metrics)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.disk.root

    @property
    def folders_dir(self) -> Path:
        return self.disk.folders_dir

    @property
    def extra_paths_file(self) -> Path:
        return self.disk.extra_paths_file

    # -- opening and closing --------------------------------------------------------------------

    def open(self) -> None:
        """Create the folders, load the index (dropping entries whose blob is gone), clear
        abandoned downloads and write the extra model paths yaml. Blocking: before the cache
        is used, off the event loop (asyncio.to_thread)."""
        self._blobs, self._names = self.disk.open()

    async def flush(self) -> None:
        """Wait for the disk work of every change so far (the index written included)."""
        await self.disk.flush()

    async def close(self) -> None:
        """Flush and stop the writer thread (its owner, on shutdown)."""
        await self.disk.close()

    def _save_index(self) -> None:
        self.disk.save_index(snapshot(self._blobs, self._names))

    # -- reading --------------------------------------------------------------------------------

    def list(self) -> list[CachedModel]:
        """Every cached file, most recently used first."""
        for model in self._blobs.values():
            model.in_use = self._pins[model.blake3]
        return sorted(self._blobs.values(), key=lambda m: -m.last_used)

    @property
    def total_bytes(self) -> int:
        return sum(m.size_bytes for m in self._blobs.values())

    def find(self, ref: ModelRef) -> str | None:
        """The blake3 of a cached file that satisfies `ref`, or None."""
        if ref.hash is not None:
            algo, hexdigest = ref.hash.split(":", 1)
            if algo == "blake3":
                return hexdigest if hexdigest in self._blobs else None
            return next((d for d, m in self._blobs.items() if m.sha256 == hexdigest), None)
        return next((d for d, m in self._blobs.items() if ref.source in m.sources), None)

    # -- fetching -------------------------------------------------------------------------------

    async def acquire(
        self, refs: Iterable[ModelRef], progress: ModelProgress | None = None
    ) -> Lease:
        """Make every file of `refs` present under its name and pin it; release the lease when
        the job is done. Raises HashMismatch, Conflict, or the downloader's error."""
        lease = Lease(self, [])
        try:
            for ref in refs:
                lease._pinned.append(await self._acquire_one(ref, progress))
        except BaseException:
            lease.release()
            raise
        return lease

    async def pull(self, ref: ModelRef, progress: ModelProgress | None = None) -> CachedModel:
        """Fetch ahead of a job (admin API, CLI): the file lands under its name, unpinned."""
        lease = await self.acquire([ref], progress)
        digest = lease._pinned[0][0]
        lease.release()
        return self._blobs[digest]

    async def _acquire_one(self, ref: ModelRef, progress: ModelProgress | None) -> tuple[str, str]:
        name = f"{ref.folder}/{ref.name}"
        while True:
            digest = self.find(ref)
            if digest is None:
                digest = await self._flights.join(ref, progress)
            if digest in self._blobs:  # not evicted meanwhile: pin and link with no await between
                linked = self._link(name, digest)
                self._pins[digest] += 1
                self._name_pins[name] += 1
                self._blobs[digest].last_used = self._clock()
                if ref.source not in self._blobs[digest].sources:
                    self._blobs[digest].sources.append(ref.source)
                self._save_index()
                try:
                    await linked  # the name on disk (or, already named, the work queued before)
                except BaseException as exc:
                    if isinstance(exc, OSError) and self._names.get(name) == digest:
                        self._forget_name(name)  # not on disk: the next acquire links it
                    self._unpin(digest, name)
                    raise
                return digest, name

    async def _fetch(self, ref: ModelRef, progress: Progress) -> str:
        digest = await self._download_and_store(ref, progress, None)
        assert digest is not None
        return digest

    async def _download_and_store(
        self, ref: ModelRef, progress: Progress, revalidate: Validators | None
    ) -> str | None:
        """The blake3 of `ref`'s bytes, downloaded and stored; None when `revalidate` was
        answered "not modified"."""
        tmp = self.root / "tmp" / uuid.uuid4().hex
        try:
            if revalidate is None:
                answer = await self._download(ref, tmp, progress)
            else:
                answer = await self._download(ref, tmp, progress, revalidate=revalidate)
            if isinstance(answer, Validators) and answer.not_modified:
                return None
            digest, sha256, size = await asyncio.to_thread(hash_file, tmp, ref.hash)
            if ref.hash is not None:
                algo, expected = ref.hash.split(":", 1)
                got = digest if algo == "blake3" else sha256
                if got != expected:
                    raise HashMismatch(
                        f"model {ref.folder}/{ref.name} from {ref.source} has {algo}:{got}, "
                        f"not the declared {ref.hash}; nothing was kept",
                        details={"expected": ref.hash, "actual": f"{algo}:{got}"},
                    )
            model = self._blobs.get(digest)
            if model is None:  # known from now on: what links it is queued after its move
                model = CachedModel(
                    blake3=digest, size_bytes=size, sha256=sha256, last_used=self._clock()
                )
                self._blobs[digest] = model
                try:
                    await self.disk.run(os.replace, tmp, self.disk.blob(digest))
                except OSError:
                    if self._blobs.get(digest) is model:
                        self._drop(digest)
                        self._save_index()
                    raise
            model.sha256 = model.sha256 or sha256
            if ref.source not in model.sources:
                model.sources.append(ref.source)
            if isinstance(answer, Validators) and ref.url is not None:
                model.validators[ref.source] = {**answer.to_json(), "checked_at": time.time()}
            self.downloads += 1
            log.info(
                "model %s/%s cached (%d bytes)",
                ref.folder,
                ref.name,
                size,
                extra={"action": "model.cached", "hash": f"blake3:{digest}"},
            )
            self._evict_to_budget(keep={digest})
            self._save_index()
            return digest
        finally:
            await self.disk.run(tmp.unlink, True)  # after its move, if it was moved

    async def refresh(
        self, ref: ModelRef, progress: ModelProgress | None = None
    ) -> tuple[CachedModel, str]:
        """Like `pull`, and a URL without a declared hash cached already is revalidated
        (models.refresh: what it returns and raises)."""
        return await refresh(self, ref, progress)

    # -- for models.refresh ---------------------------------------------------------------------

    def name_in_use(self, name: str) -> bool:
        """Whether a running job uses the name `folder/name`."""
        return bool(self._name_pins[name])

    def model(self, digest: str) -> CachedModel | None:
        return self._blobs.get(digest)

    async def store(self, ref: ModelRef, progress: Progress, revalidate: Validators) -> str | None:
        """`ref` downloaded again, revalidated: None when its bytes did not change."""
        return await self._download_and_store(ref, progress, revalidate)

    async def drop_if_unused(self, digest: str) -> None:
        """Drop `digest` when nothing names, sources or pins it any more."""
        stale = self._blobs.get(digest)
        if stale is not None and not stale.names and not stale.sources and not self._pins[digest]:
            self._drop(digest)
            self._save_index()
            await self.disk.flush()

    # -- names, pins, eviction ------------------------------------------------------------------

    def on_names_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop; it must be quick and not raise) whenever a name
        is added, points at other bytes, or goes, once that is on disk: what the backends that
        see the cache list has changed (their node catalogs are fetched again:
        backends.catalog)."""
        self._name_listeners.append(callback)

    def _names_changed(self) -> None:
        """Tell the listeners once the disk work queued so far (the link or unlink of the
        change) is done: the writer thread does it in order, so a no-op queued now ends after
        it. A ComfyUI asked for its model lists then finds the change."""
        if not self._name_listeners:
            return
        try:
            written = self.disk.run(lambda: None)
        except RuntimeError:  # the writer is closed: nothing more lands on disk
            return
        written.add_done_callback(lambda _: self._tell_names_changed())

    def _tell_names_changed(self) -> None:
        for callback in self._name_listeners:
            try:
                callback()
            except Exception:
                log.exception("a listener of the model cache's names failed")

    def _link(self, name: str, digest: str) -> Awaitable[None]:
        """Point `name` at `digest` in the state now (Conflict while a job uses it with other
        bytes); await the result for it on disk."""
        current = self._names.get(name)
        if current == digest:
            return self.disk.flush()  # its link, queued by another acquire, may not be done
        if current is not None and self._name_pins[name]:
            raise Conflict(
                f"model name {name} is in use by a running job with other bytes; give this "
                "file another name",
                details={"name": name},
            )
        linked = self.disk.run(self.disk.link, name, digest)
        if current is not None:
            self._blobs[current].names.remove(name)
        self._names[name] = digest
        self._blobs[digest].names.append(name)
        self._names_changed()
        return linked

    def _forget_name(self, name: str) -> None:
        digest = self._names.pop(name)
        if digest in self._blobs:
            self._blobs[digest].names.remove(name)
        self.disk.post(self.disk.unlink, self.disk.link_path(name))
        self._save_index()
        self._names_changed()

    def _unpin(self, digest: str, name: str) -> None:
        self._pins[digest] -= 1
        self._name_pins[name] -= 1
        self._pins += Counter()  # drop zeros
        self._name_pins += Counter()
        if digest in self._blobs:
            self._blobs[digest].last_used = self._clock()
        self._evict_to_budget(keep=set())
        self._save_index()

    def _evict_to_budget(self, keep: set[str]) -> None:
        if self.budget_bytes is None:
            return
        total = self.total_bytes
        for model in sorted(self._blobs.values(), key=lambda m: m.last_used):
            if total <= self.budget_bytes:
                break
            if model.blake3 in keep or self._pins[model.blake3]:
                continue
            total -= model.size_bytes
            self._drop(model.blake3)
            log.info(
                "model blake3:%s evicted (cache over its budget)",
                model.blake3,
                extra={"action": "model.evicted", "hash": f"blake3:{model.blake3}"},
            )

    def _drop(self, digest: str) -> None:
        """Forget `digest` and its names now; their files go on the writer thread."""
        model = self._blobs.pop(digest)
        for name in model.names:
            self._names.pop(name, None)
        links = [self.disk.link_path(name) for name in model.names]
        self.disk.post(self.disk.unlink, *links, self.disk.blob(digest))
        if model.names:
            self._names_changed()

    async def remove(self, key: str) -> CachedModel:
        """Evict one file now: by `blake3:<hex>`, `sha256:<hex>` or `folder/name`; returns once
        its files are gone. Conflict while a job uses it; NotFound when nothing matches."""
        digest = self._lookup(key)
        if digest is None:
            raise NotFound(f"no cached model {key!r}", details={"model": key})
        if self._pins[digest]:
            raise Conflict(f"model {key!r} is in use by a running job", details={"model": key})
        model = self._blobs[digest]
        self._drop(digest)
        self._save_index()
        await self.disk.flush()
        return model

    def _lookup(self, key: str) -> str | None:
        algo, _, hexdigest = key.partition(":")
        if algo == "blake3" and hexdigest in self._blobs:
            return hexdigest
        if algo == "sha256":
            return next((d for d, m in self._blobs.items() if m.sha256 == hexdigest), None)
        return self._names.get(key)


__all__ = [
    "CachedModel",
    "Downloader",
    "Lease",
    "ModelCache",
    "ModelProgress",
    "Progress",
    "Validators",
    "extra_paths_yaml",
]
