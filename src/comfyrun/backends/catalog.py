"""The fleet's node catalogs: what each backend can run (its /object_info, model lists,
embeddings and features), kept in the store so that they are known before any backend is up.

Theory of operation. `BackendCatalog` holds the last catalog fetched from every backend, loaded
from the store at start. It listens to the pool: whenever a backend becomes ready (first start,
restart after a crash, a remote ComfyUI that came back) its catalog is fetched again and stored.
Reads never wait for a backend when something is known: `union()`, `get(name)` and
`object_info(name)` answer from memory. `current()` is what ComfyUI clients get: the union, and
when nothing is known at all, it wakes the backends (a lazy managed one is started, as a job
would start it) and waits for their catalogs, each bounded by its start timeout. A backend that
is known to the fleet but has no catalog yet is woken in the background on such a read.

Without a pool (the `api` role) the workers write the catalogs; this side reads them from the
store again when they may have changed (at most every `reload_s`), and fetches directly from
configured URL backends when the store has nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from comfyrun.comfy.catalog import fetch_catalog
from comfyrun.core.catalog import JSON, NodeCatalog, union_catalog
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

#: fetch(url, backend name) → that backend's catalog (comfy.catalog.fetch_catalog by default).
Fetch = Callable[[str, str], Awaitable[NodeCatalog]]

_UP = ("ready", "busy")


class BackendCatalog:
    """Per-backend node catalogs and their union. See the module docstring."""

    def __init__(
        self,
        store: JobStore,
        pool: Any = None,
        *,
        urls: Mapping[str, str] | None = None,
        ttl_s: float = 300.0,
        reload_s: float = 5.0,
        fetch: Fetch | None = None,
        wake_timeout_s: float = 120.0,
    ) -> None:
        """`pool`: a backends.pool.BackendPool (None in the `api` role); `urls`: backend name →
        ComfyUI URL to fetch from when there is no pool; `ttl_s`: a ready backend's catalog
        older than this is fetched again (in the background) when read."""
        self._store = store
        self._pool = pool
        self._urls = dict(urls or {})
        self._ttl_s = ttl_s
        self._reload_s = reload_s
        self._fetch: Fetch = fetch or _fetch
        self._wake_timeout_s = wake_timeout_s
        self._entries: dict[str, NodeCatalog] = {}
        self._union: NodeCatalog | None = None
        self._stamps: dict[str, float] = {}
        self._loaded_at = -1e9
        self._seen: dict[str, tuple[bool, str | None]] = {}
        self._tasks: dict[str, asyncio.Task[NodeCatalog | None]] = {}
        self._again: dict[str, float] = {}  # backend → when it changed during a fetch
        self._woken: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []
        self._stopped = False

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the stored catalogs; with a pool, refresh each backend as it becomes ready."""
        await self._reload(force=True)
        if self._pool is not None:
            self._pool.add_listener(self._pool_changed, slots=False)
            self._pool_changed()

    async def stop(self) -> None:
        self._stopped = True  # the pool may still report changes while it stops
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- reads (from memory) -----------------------------------------------------------------
    def names(self) -> list[str]:
        """The fleet's backends: the pool's; without one, the configured URLs and the stored."""
        if self._pool is not None:
            return [b.name for b in self._pool.backends]
        return [*self._urls, *sorted(n for n in self._entries if n not in self._urls)]

    def get(self, backend: str) -> NodeCatalog | None:
        """The last catalog of `backend`, or None if it was never fetched."""
        return self._entries.get(backend)

    def object_info(self, backend: str) -> JSON | None:
        """The /object_info of `backend` (as last fetched), or None if never fetched."""
        entry = self._entries.get(backend)
        return entry.object_info if entry is not None else None

    def catalogs(self) -> list[NodeCatalog]:
        """The fleet's known catalogs, in fleet order."""
        return [self._entries[n] for n in self.names() if n in self._entries]

    def union(self) -> NodeCatalog | None:
        """What ComfyUI clients are shown: the union of the known catalogs (None: none known)."""
        if self._union is None:
            known = self.catalogs()
            self._union = union_catalog(known, name="*") if known else None
        return self._union

    def on_change(self, callback: Callable[[str], None]) -> None:
        """`callback(backend name)` after a backend's catalog changed."""
        self._listeners.append(callback)

    # --- reads that may wait -----------------------------------------------------------------
    async def current(self, *, wake: bool = True) -> NodeCatalog | None:
        """The union, fresh enough. With nothing known: fetched now from the backends that are
        up and, with `wake`, from the others after starting them (bounded by their start
        timeout). Backends not known yet are woken in the background (with `wake`)."""
        if self._pool is None:
            await self._reload()
        missing = [n for n in self.names() if n not in self._entries]
        if not self._entries and missing:
            await self.ensure(missing, wake=wake)
        elif missing and wake:
            for name in missing:
                if name not in self._woken:
                    self._woken.add(name)
                    self._spawn(name, wake=True)
        self._refresh_stale()
        return self.union()

    async def ensure(
        self, names: Sequence[str] | None = None, *, wake: bool = True
    ) -> dict[str, NodeCatalog]:
        """Fetch the catalogs of `names` (default: every backend) that are not known yet,
        starting lazy backends when `wake`, and wait for them; returns those now known."""
        wanted = list(self.names() if names is None else names)
        pending = [self._spawn(n, wake=wake) for n in wanted if n not in self._entries]
        if pending:
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)
        return {n: self._entries[n] for n in wanted if n in self._entries}

    async def recheck(self, *, min_age_s: float = 60.0) -> NodeCatalog | None:
        """The union after asking again every backend whose catalog is older than `min_age_s`
        (starting lazy ones): for a submission refused on stored definitions that may predate
        a backend's new nodes or models. The age bound keeps repeated refusals cheap."""
        cutoff = time.time() - min_age_s
        stale = [
            n
            for n in self.names()
            if (entry := self._entries.get(n)) is None or entry.fetched_at < cutoff
        ]
        tasks = [self._spawn(n, wake=True) for n in stale]
        if tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)
        return self.union()

    async def refresh(self, backend: str) -> NodeCatalog | None:
        """Fetch `backend`'s catalog again now (no wake); the stored one if that fails."""
        await asyncio.shield(self._spawn(backend, wake=False))
        return self._entries.get(backend)

    async def settled(self) -> None:
        """Return once no fetch is in flight (nor one that a fetch in flight will start)."""
        while self._tasks:
            tasks = [asyncio.shield(t) for t in self._tasks.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals ---------------------------------------------------------------------------
    def _spawn(self, name: str, *, wake: bool) -> asyncio.Task[NodeCatalog | None]:
        task = self._tasks.get(name)
        if task is not None and not task.done():
            if not wake:
                self._again.setdefault(name, time.time())  # fetch again if this one is older
            return task
        task = asyncio.get_running_loop().create_task(
            self._update(name, wake=wake), name=f"catalog:{name}"
        )
        self._tasks[name] = task
        task.add_done_callback(functools.partial(self._forget, name))
        return task

    def _forget(self, name: str, task: asyncio.Task[NodeCatalog | None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
            changed_at = self._again.pop(name, None)
            entry = self._entries.get(name)
            if self._stopped or changed_at is None:
                return
            if entry is None or entry.fetched_at < changed_at:
                self._spawn(name, wake=False)

    async def _update(self, name: str, *, wake: bool) -> NodeCatalog | None:
        try:
            url = await self._url(name, wake=wake)
            if url is None:
                return None
            entry = await self._fetch(url, name)
        except (ComfyrunError, OSError, TimeoutError) as exc:
            log.info(
                "no catalog from backend %s: %s",
                name,
                exc,
                extra={"action": "catalog_failed", "backend": name},
            )
            return None
        await self._keep(entry)
        return entry

    async def _url(self, name: str, *, wake: bool) -> str | None:
        """Where to fetch `name` from: its URL if it is up (or a URL backend), after starting
        it if it is a stopped managed one and `wake`; None if it cannot be asked now."""
        if self._pool is None:
            return self._urls.get(name)
        backend = self._pool.get(name)
        if backend is None:
            return None
        if not backend.managed:  # a remote ComfyUI: asked unless its probes find it down
            url: str | None = backend.url
            return None if str(backend.state) == "unhealthy" else url
        if not backend.process_up:
            if not wake or getattr(backend, "kept_stopped", False):  # an admin stopped it
                return None
            limit = float(getattr(backend.spec.managed, "ready_timeout_s", self._wake_timeout_s))
            log.info(
                "starting backend %s to learn its node definitions",
                name,
                extra={"action": "catalog_wake", "backend": name},
            )
            async with asyncio.timeout(limit + 10.0):
                await backend.ready_client()
        url = backend.url
        return url

    async def _keep(self, entry: NodeCatalog) -> None:
        try:
            await self._store.put_catalog(entry)
        except ComfyrunError as exc:
            log.warning(
                "could not store backend %s's catalog: %s",
                entry.backend,
                exc,
                extra={"action": "catalog_store_failed", "backend": entry.backend},
            )
        self._set(entry)
        log.info(
            "backend %s describes %d node types (ComfyUI %s)",
            entry.backend,
            len(entry.object_info),
            entry.comfyui_version or "?",
            extra={"action": "catalog_refreshed", "backend": entry.backend},
        )

    def _set(self, entry: NodeCatalog) -> None:
        old = self._entries.get(entry.backend)
        if old is not None and old.fetched_at > entry.fetched_at:
            return
        self._entries[entry.backend] = entry
        self._stamps[entry.backend] = entry.fetched_at
        self._union = None
        for callback in self._listeners:
            callback(entry.backend)

    async def _reload(self, *, force: bool = False) -> None:
        """Read the stored catalogs again if another process may have changed them."""
        now = time.monotonic()
        if not force and now - self._loaded_at < self._reload_s:
            return
        self._loaded_at = now
        try:
            stamps = await self._store.catalog_stamps()
            if stamps == self._stamps and not force:
                return
            stored = await self._store.catalogs()
        except ComfyrunError as exc:
            log.warning("cannot read the stored catalogs: %s", exc)
            return
        for entry in stored:
            self._set(entry)

    def _pool_changed(self) -> None:
        """A backend that became ready (or came back on another URL) is asked again. Called by
        the pool on every change of a backend's state (not of its slots: a job taken or let go
        never makes a backend come up): cheap, and it never raises into the pool."""
        if self._stopped:
            return
        try:
            for backend in self._pool.backends:
                up = str(backend.state) in _UP
                key = (up, backend.url if up else None)
                before = self._seen.get(backend.name)
                self._seen[backend.name] = key
                if up and before != key:
                    self._woken.discard(backend.name)
                    self._spawn(backend.name, wake=False)
        except Exception:
            log.exception("catalog: could not follow a backend change")

    def models_changed(self) -> None:
        """The model cache's names changed (a file delivered, refreshed or evicted): the
        backends that see the cache list other model files now, so their catalogs (model lists,
        /object_info's file choices) are fetched again, in the background. For
        ModelCache.on_names_changed: cheap, never raises."""
        if self._pool is None or self._stopped:
            return
        try:
            for backend in self._pool.backends:
                if backend.receives_models and str(backend.state) in _UP:
                    self._spawn(backend.name, wake=False)
        except Exception:
            log.exception("catalog: could not follow a change of the model cache")

    def _refresh_stale(self) -> None:
        if self._pool is None or self._stopped:
            return
        cutoff = time.time() - self._ttl_s
        for name, entry in self._entries.items():
            backend = self._pool.get(name)
            if (
                entry.fetched_at < cutoff
                and backend is not None
                and str(backend.state) in _UP
                and name not in self._tasks
            ):
                self._spawn(name, wake=False)


async def _fetch(url: str, name: str) -> NodeCatalog:
    return await fetch_catalog(url, name)


__all__ = ["BackendCatalog", "Fetch"]
