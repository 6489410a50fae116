"""BackendCatalog with a fake pool and a fake fetch: answers from the store without asking any
backend, wakes backends only when nothing is known, and asks a backend again when it comes up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace

from comfyrun.backends.catalog import BackendCatalog
from comfyrun.core.catalog import NodeCatalog
from comfyrun.store.memory import MemoryStore


class FakeBackend:
    def __init__(self, pool: FakePool, name: str, *, managed: bool = True) -> None:
        self.pool, self.name, self.managed = pool, name, managed
        self.up = not managed
        self.starts = 0
        self.spec = SimpleNamespace(managed=SimpleNamespace(ready_timeout_s=5.0))

    @property
    def process_up(self) -> bool:
        return self.managed and self.up

    @property
    def url(self) -> str | None:
        return f"http://{self.name}" if self.up else None

    @property
    def state(self) -> str:
        return "ready" if self.up else "stopped"

    async def ready_client(self) -> None:
        self.starts += 1
        self.set_up(True)

    def set_up(self, up: bool) -> None:
        self.up = up
        self.pool.changed()


class FakePool:
    def __init__(self, *names: str) -> None:
        self.backends = [FakeBackend(self, n) for n in names]
        self._listeners: list[Callable[[], None]] = []

    def get(self, name: str) -> FakeBackend | None:
        return next((b for b in self.backends if b.name == name), None)

    def add_listener(self, callback: Callable[[], None], *, slots: bool = True) -> None:
        assert not slots  # the catalog follows backends' states only
        self._listeners.append(callback)

    def changed(self) -> None:
        for callback in self._listeners:
            callback()


class FakeFetch:
    """Each backend describes one node type of its own and a checkpoint list."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.models: dict[str, list[str]] = {}
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, url: str, name: str) -> NodeCatalog:
        self.calls.append(name)
        fetched_at = time.time()
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return catalog(name, self.models.get(name, ["base.ckpt"]), fetched_at)


def catalog(name: str, ckpts: list[str], fetched_at: float = 1.0) -> NodeCatalog:
    return NodeCatalog(
        backend=name,
        object_info={
            f"Node_{name}": {"input": {}},
            "Loader": {"input": {"required": {"ckpt_name": [ckpts, {}]}}},
        },
        fetched_at=fetched_at,
        models={"checkpoints": ckpts},
    )


async def settled(cat: BackendCatalog) -> None:
    async with asyncio.timeout(10):
        await cat.settled()


async def test_stored_catalogs_are_served_without_asking_or_starting_a_backend() -> None:
    store, pool, fetch = MemoryStore(), FakePool("a", "b"), FakeFetch()
    await store.put_catalog(catalog("a", ["a.ckpt"]))
    await store.put_catalog(catalog("b", ["b.ckpt"]))
    await store.put_catalog(catalog("gone", ["old.ckpt"]))  # no longer in the fleet
    cat = BackendCatalog(store, pool, fetch=fetch)
    await cat.start()

    union = await cat.current()

    assert union is not None and sorted(union.object_info) == ["Loader", "Node_a", "Node_b"]
    assert union.models["checkpoints"] == ["a.ckpt", "b.ckpt"]
    assert cat.object_info("a") == catalog("a", ["a.ckpt"]).object_info
    assert fetch.calls == [] and [b.starts for b in pool.backends] == [0, 0]
    await cat.stop()


async def test_with_nothing_known_the_backends_are_started_and_waited_for() -> None:
    store, pool, fetch = MemoryStore(), FakePool("a", "b"), FakeFetch()
    cat = BackendCatalog(store, pool, fetch=fetch)
    await cat.start()
    assert await cat.current(wake=False) is None  # never starts anything without `wake`
    assert [b.starts for b in pool.backends] == [0, 0]

    union = await cat.current()

    assert union is not None and {"Node_a", "Node_b"} <= set(union.object_info)
    assert [b.starts for b in pool.backends] == [1, 1]
    assert sorted(c.backend for c in await store.catalogs()) == ["a", "b"]
    await settled(cat)
    assert sorted(fetch.calls) == ["a", "b"]  # becoming ready during the wake: no second fetch
    await cat.stop()


async def test_a_backend_without_a_catalog_is_woken_in_the_background() -> None:
    store, pool, fetch = MemoryStore(), FakePool("a", "b"), FakeFetch()
    await store.put_catalog(catalog("a", ["a.ckpt"]))
    cat = BackendCatalog(store, pool, fetch=fetch)
    await cat.start()
    changed: list[str] = []
    cat.on_change(changed.append)

    union = await cat.current()  # answered at once with what is known

    assert union is not None and "Node_b" not in union.object_info
    await settled(cat)
    assert changed == ["b"] and pool.backends[1].starts == 1
    current = await cat.current()
    assert current is not None and "Node_b" in current.object_info
    await cat.stop()


async def test_a_backend_that_comes_up_again_is_asked_again() -> None:
    store, pool, fetch = MemoryStore(), FakePool("a"), FakeFetch()
    cat = BackendCatalog(store, pool, fetch=fetch)
    await cat.start()
    await cat.ensure()
    backend = pool.backends[0]
    fetch.models["a"] = ["a.ckpt", "new.ckpt"]

    backend.set_up(False)
    backend.set_up(True)  # restarted (new models): fetched and stored again

    await settled(cat)
    [stored] = await store.catalogs()
    assert stored.models["checkpoints"] == ["a.ckpt", "new.ckpt"]
    await cat.stop()


async def test_a_restart_during_a_fetch_is_followed_by_another_fetch() -> None:
    store, pool, fetch = MemoryStore(), FakePool("a"), FakeFetch()
    cat = BackendCatalog(store, pool, fetch=fetch)
    await cat.start()
    fetch.gate = asyncio.Event()
    backend = pool.backends[0]
    backend.set_up(True)  # a fetch starts and waits on the gate
    async with asyncio.timeout(10):
        await fetch.started.wait()
    fetch.models["a"] = ["after_restart.ckpt"]
    backend.set_up(False)
    backend.set_up(True)

    fetch.gate.set()

    await settled(cat)
    assert fetch.calls == ["a", "a"]
    entry = cat.get("a")
    assert entry is not None and entry.models["checkpoints"] == ["after_restart.ckpt"]
    await cat.stop()


async def test_without_a_pool_catalogs_written_by_workers_are_read_from_the_store() -> None:
    store, fetch = MemoryStore(), FakeFetch()
    api_side = BackendCatalog(store, None, fetch=fetch, reload_s=0.0)
    await api_side.start()
    assert await api_side.current() is None

    await store.put_catalog(catalog("worker-gpu", ["w.ckpt"]))  # a worker elsewhere

    union = await api_side.current()
    assert union is not None and "Node_worker-gpu" in union.object_info
    assert api_side.names() == ["worker-gpu"] and fetch.calls == []
    await api_side.stop()


async def test_without_a_pool_a_configured_url_backend_is_asked_directly() -> None:
    store, fetch = MemoryStore(), FakeFetch()
    api_side = BackendCatalog(store, None, urls={"remote": "http://remote:8188"}, fetch=fetch)
    await api_side.start()

    union = await api_side.current()

    assert union is not None and "Node_remote" in union.object_info
    assert fetch.calls == ["remote"]
    await api_side.stop()
