"""comfyrun's model cache: files stored once by their blake3 hash, seen by ComfyUI by name.

Layout under `root`::

    blobs/<blake3 hex>         the bytes, once
    folders/<folder>/<name>    a symlink to its blob: what ComfyUI lists (extra model paths)
    tmp/                       downloads in progress
    index.json                 blobs (size, sha256, sources, last use) and names

Rules:
- A model is known by its hash when the caller gives one, else by its source (URL or asset):
  a second job with the same source downloads nothing.
- Concurrent requests for one model share one download (single flight); a waiter that gives up
  does not cancel it for the others. Its progress goes to every waiter (one that joins late
  hears where it stands at once).
- The bytes are hashed as they land; a declared hash that does not match fails with
  HashMismatch and keeps nothing.
- `acquire` pins the files a job uses until its lease is released. Over the byte budget, the
  least recently used unpinned files are evicted (never a pinned one, never the file just
  fetched); a name in use by a running job is never re-pointed at other bytes.
- ComfyUI rescans a folder whose mtime changed, so files linked while it runs are listed
  without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from comfyrun.errors import Conflict, HashMismatch, NotFound
from comfyrun.models.specs import MODEL_FOLDERS, ModelRef

log = logging.getLogger(__name__)

#: (bytes so far, total or None)
Progress = Callable[[int, int | None], None]
#: (which model, bytes so far, total or None)
ModelProgress = Callable[[ModelRef, int, int | None], None]


@dataclass(frozen=True, slots=True)
class Validators:
    """What a URL's answer said of its bytes, kept to revalidate them later with a conditional
    GET (`ETag` -> If-None-Match, `Last-Modified` -> If-Modified-Since)."""

    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    #: (a conditional GET's answer) the bytes did not change: nothing was written
    not_modified: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"etag": self.etag, "last_modified": self.last_modified, "size": self.size}


#: Writes the bytes of `ref` into the file `dest` and returns what the source said of them
#: (None: nothing worth keeping); raises a ComfyrunError when it cannot. Called with
#: `revalidate=` (the validators kept) only by `ModelCache.refresh`: a downloader that can
#: ask conditionally returns `not_modified` and writes nothing when the bytes are the same.
Downloader = Callable[..., Awaitable["Validators | None"]]

_CHUNK = 4 << 20


@dataclass(slots=True)
class CachedModel:
    """One file in the cache."""

    blake3: str
    size_bytes: int
    sha256: str | None = None
    sources: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # "folder/name"
    last_used: float = 0.0
    in_use: int = 0
    #: per URL source: the validators its last answer carried, and when (to refresh by)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": f"blake3:{self.blake3}",
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "sources": list(self.sources),
            "names": list(self.names),
            "last_used": self.last_used,
            "in_use": self.in_use,
            "validators": {k: dict(v) for k, v in self.validators.items()},
        }


class Lease:
    """The files one job uses, pinned until `release()` (idempotent)."""

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
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self._download = download
        self._clock = clock
        self._blobs: dict[str, CachedModel] = {}
        self._names: dict[str, str] = {}  # "folder/name" -> blake3
        self._pins: Counter[str] = Counter()
        self._name_pins: Counter[str] = Counter()
        self._name_listeners: list[Callable[[], None]] = []
        self._flights: dict[str, _Flight] = {}
        self.downloads = 0  # finished downloads (for tests and metrics)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def folders_dir(self) -> Path:
        return self.root / "folders"

    @property
    def extra_paths_file(self) -> Path:
        return self.root / "extra_model_paths.yaml"

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest

    # -- opening --------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folders, load the index (dropping entries whose blob is gone), clear
        abandoned downloads and write the extra model paths yaml."""
        for sub in ("blobs", "tmp", "folders"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS:
            (self.folders_dir / folder).mkdir(exist_ok=True)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)
        self._load_index()
        self.extra_paths_file.write_text(extra_paths_yaml(self.folders_dir), encoding="utf-8")

    def _load_index(self) -> None:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError):
            data = {}
        for digest, raw in (data.get("blobs") or {}).items():
            if self._blob(digest).is_file():
                self._blobs[digest] = CachedModel(
                    blake3=digest,
                    size_bytes=int(raw.get("size_bytes", 0)),
                    sha256=raw.get("sha256"),
                    sources=list(raw.get("sources") or []),
                    last_used=float(raw.get("last_used") or 0.0),
                    validators=dict(raw.get("validators") or {}),
                )
        for name, digest in (data.get("names") or {}).items():
            if digest in self._blobs and (self.folders_dir / name).is_symlink():
                self._names[name] = digest
                self._blobs[digest].names.append(name)

    def _save_index(self) -> None:
        data = {
            "blobs": {
                d: {
                    "size_bytes": m.size_bytes,
                    "sha256": m.sha256,
                    "sources": m.sources,
                    "last_used": m.last_used,
                    "validators": m.validators,
                }
                for d, m in self._blobs.items()
            },
            "names": dict(self._names),
        }
        tmp = self.root / "tmp" / f"index-{uuid.uuid4().hex}.json"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.root / "index.json")

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
                digest = await self._fetch_shared(ref, progress)
            if digest in self._blobs:  # not evicted meanwhile: pin and link with no await between
                self._link(name, digest)
                self._pins[digest] += 1
                self._name_pins[name] += 1
                self._blobs[digest].last_used = self._clock()
                if ref.source not in self._blobs[digest].sources:
                    self._blobs[digest].sources.append(ref.source)
                self._save_index()
                return digest, name

    async def _fetch_shared(self, ref: ModelRef, progress: ModelProgress | None) -> str:
        key = ref.hash or ref.source
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            task = asyncio.get_running_loop().create_task(self._fetch(ref, flight.report))
            flight.task = task
            self._flights[key] = flight
            done = flight

            def landed(task: asyncio.Task[str]) -> None:
                if self._flights.get(key) is done:
                    del self._flights[key]
                if not task.cancelled():
                    # its waiters get the error; when all of them left (their jobs canceled)
                    # asyncio would log it as never retrieved, with its traceback
                    task.exception()

            task.add_done_callback(landed)
        assert flight.task is not None
        listener = flight.listen(ref, progress) if progress is not None else None
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if listener is not None:
                flight.listeners.remove(listener)
            if flight.waiters == 0 and not flight.task.done():
                # every job that wanted it left (canceled): nobody waits for its retries; and
                # nobody joins it now (until its task ended, one asking for the same file
                # joined it and got its CancelledError)
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]

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
            digest, sha256, size = await asyncio.to_thread(_hash_file, tmp, ref.hash)
            if ref.hash is not None:
                algo, expected = ref.hash.split(":", 1)
                got = digest if algo == "blake3" else sha256
                if got != expected:
                    raise HashMismatch(
                        f"model {ref.folder}/{ref.name} from {ref.source} has {algo}:{got}, "
                        f"not the declared {ref.hash}; nothing was kept",
                        details={"expected": ref.hash, "actual": f"{algo}:{got}"},
                    )
            if digest not in self._blobs:
                await asyncio.to_thread(os.replace, tmp, self._blob(digest))
                self._blobs[digest] = CachedModel(
                    blake3=digest, size_bytes=size, sha256=sha256, last_used=self._clock()
                )
            model = self._blobs[digest]
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
            await asyncio.to_thread(tmp.unlink, missing_ok=True)

    async def refresh(
        self, ref: ModelRef, progress: ModelProgress | None = None
    ) -> tuple[CachedModel, str]:
        """Like `pull`, and a URL without a declared hash cached already is revalidated: a
        conditional GET with the validators its last answer carried (ETag, Last-Modified); its
        bytes are replaced only when they changed. Returns the model and what happened:
        `content_addressed` (a hash or an asset: its bytes cannot change; nothing asked),
        `fetched` (it was not cached), `not_modified` (304), `unchanged` (downloaded again,
        the same bytes: the server keeps no validators) or `replaced` (new bytes under the
        same name; the old ones are dropped unless something else uses them). Conflict when
        the name is in use by a running job."""
        name = f"{ref.folder}/{ref.name}"
        if self._name_pins[name] and ref.hash is None and ref.url is not None:
            raise Conflict(
                f"model name {name} is in use by a running job; refresh it once that ends",
                details={"name": name},
            )
        old = self.find(ref)
        if ref.hash is not None or ref.url is None or old is None:
            model = await self.pull(ref, progress)
            return model, "content_addressed" if ref.hash or ref.url is None else "fetched"
        kept = self._blobs[old].validators.get(ref.source) or {}
        revalidate = Validators(etag=kept.get("etag"), last_modified=kept.get("last_modified"))
        report: Progress = (lambda d, t: progress(ref, d, t)) if progress else (lambda d, t: None)
        digest = await self._download_and_store(ref, report, revalidate)
        if digest is None:
            if old in self._blobs and ref.source in self._blobs[old].validators:
                self._blobs[old].validators[ref.source]["checked_at"] = time.time()
            return await self.pull(ref, progress), "not_modified"
        if digest == old:
            return await self.pull(ref, progress), "unchanged"
        stale = self._blobs.get(old)
        if stale is not None:  # the URL means the new bytes now
            if ref.source in stale.sources:
                stale.sources.remove(ref.source)
            stale.validators.pop(ref.source, None)
        model = await self.pull(ref, progress)
        stale = self._blobs.get(old)
        if stale is not None and not stale.names and not stale.sources and not self._pins[old]:
            self._drop(old)
            self._save_index()
        log.info(
            "model %s/%s: %s changed; the new bytes replace the old",
            ref.folder,
            ref.name,
            ref.source,
            extra={"action": "model.refreshed", "hash": f"blake3:{model.blake3}"},
        )
        return model, "replaced"

    # -- names, pins, eviction ------------------------------------------------------------------

    def on_names_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop; it must be quick and not raise) whenever a name
        is added, points at other bytes, or goes: what the backends that see the cache list
        has changed (their node catalogs are fetched again: backends.catalog)."""
        self._name_listeners.append(callback)

    def _names_changed(self) -> None:
        for callback in self._name_listeners:
            try:
                callback()
            except Exception:
                log.exception("a listener of the model cache's names failed")

    def _link(self, name: str, digest: str) -> None:
        current = self._names.get(name)
        if current == digest:
            return
        if current is not None and self._name_pins[name]:
            raise Conflict(
                f"model name {name} is in use by a running job with other bytes; give this "
                "file another name",
                details={"name": name},
            )
        link = self.folders_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
        tmp.symlink_to(self._blob(digest))
        os.replace(tmp, link)  # atomic: ComfyUI never sees a half-made name
        if current is not None:
            self._blobs[current].names.remove(name)
        self._names[name] = digest
        self._blobs[digest].names.append(name)
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
        model = self._blobs.pop(digest)
        for name in model.names:
            self._names.pop(name, None)
            (self.folders_dir / name).unlink(missing_ok=True)
        self._blob(digest).unlink(missing_ok=True)
        if model.names:
            self._names_changed()

    def remove(self, key: str) -> CachedModel:
        """Evict one file now: by `blake3:<hex>`, `sha256:<hex>` or `folder/name`. Conflict
        while a job uses it; NotFound when nothing matches."""
        digest = self._lookup(key)
        if digest is None:
            raise NotFound(f"no cached model {key!r}", details={"model": key})
        if self._pins[digest]:
            raise Conflict(f"model {key!r} is in use by a running job", details={"model": key})
        model = self._blobs[digest]
        self._drop(digest)
        self._save_index()
        return model

    def _lookup(self, key: str) -> str | None:
        algo, _, hexdigest = key.partition(":")
        if algo == "blake3" and hexdigest in self._blobs:
            return hexdigest
        if algo == "sha256":
            return next((d for d, m in self._blobs.items() if m.sha256 == hexdigest), None)
        return self._names.get(key)


def extra_paths_yaml(folders_dir: Path) -> str:
    """ComfyUI's extra model paths for the cache: every model folder under `folders_dir`."""
    lines = ["# written by comfyrun: its model cache, seen by the ComfyUIs it manages", "comfyrun:"]
    lines.append(f"    base_path: {json.dumps(str(folders_dir))}")
    lines += [f"    {folder}: {folder}" for folder in sorted(MODEL_FOLDERS)]
    return "\n".join(lines) + "\n"


def _hash_file(path: Path, declared: str | None) -> tuple[str, str | None, int]:
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


@dataclass(slots=True)
class _Flight:
    """One download in progress, and the requesters following its progress."""

    task: asyncio.Task[str] | None = None
    listeners: list[tuple[ModelRef, ModelProgress]] = field(default_factory=list)
    done: int = 0
    total: int | None = None
    started: bool = False
    waiters: int = 0

    def listen(self, ref: ModelRef, tell: ModelProgress) -> tuple[ModelRef, ModelProgress]:
        listener = (ref, tell)
        self.listeners.append(listener)
        if self.started:
            tell(ref, self.done, self.total)
        return listener

    def report(self, done: int, total: int | None) -> None:
        self.done, self.total, self.started = done, total, True
        for ref, tell in list(self.listeners):
            tell(ref, done, total)


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
