"""An engine (memory store, memory output storage, pool of fake ComfyUI servers, dispatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from tests.support.engine import EngineBase, FakeClient, FakeServer

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.holds import HoldFile
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.job import Job, JobStatus
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.errors import BackendError
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store

FAST = DispatchSettings(
    lease_s=30.0,
    heartbeat_s=0.2,
    idle_wait_s=1.0,
    progress_interval_s=0.05,
    interrupt_grace_s=0.5,
    cancel_grace_s=1.0,
    sweep_interval_s=0.5,
    submit_timeout_s=5.0,
    stop_grace_s=2.0,
)
HEALTH = HealthSettings(interval_s=0.1, timeout_s=1.0, failure_threshold=2, down_interval_s=0.05)


@pytest.fixture
async def ready_pool() -> AsyncIterator[BackendPool]:
    """A started pool of one fake backend, "a", ready for jobs (stopped after the test)."""
    server = FakeServer(name="a")
    pool = BackendPool.from_specs(
        [BackendSpec(name="a", url="fake://a")], lambda url: FakeClient(server), health=HEALTH
    )
    await pool.start()
    try:
        assert await pool.wait_ready(5)
        yield pool
    finally:
        await pool.stop()
        await server.stop()


@dataclass
class Engine(EngineBase):
    servers: dict[str, FakeServer]
    clients: list[FakeClient] = field(default_factory=list)
    wait_timeout: ClassVar[float] = 20.0


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Any]]:
    engines: list[Engine] = []

    async def make(
        names: tuple[str, ...] = ("a",),
        settings: DispatchSettings = FAST,
        start: bool = True,
        holds: HoldFile | None = None,
        store_url: str = "memory://",
    ) -> Engine:
        store = open_store(store_url)
        await store.open()
        storage = open_output_storage("memory://")
        servers = {name: FakeServer(name=name) for name in names}
        clients: list[FakeClient] = []

        def client_factory(url: str) -> FakeClient:
            client = FakeClient(servers[url.removeprefix("fake://")])
            clients.append(client)
            return client

        pool = BackendPool.from_specs(
            [BackendSpec(name=n, url=f"fake://{n}") for n in names], client_factory, health=HEALTH
        )
        if holds is not None:  # the admins' holds kept there (backends.holds)
            pool.keep_holds(holds)
        await pool.start()
        assert await pool.wait_ready(5.0)
        dispatcher = Dispatcher(store, pool, storage, settings, worker_id="w1")
        engine = Engine(store, storage, pool, dispatcher, servers, clients)
        engines.append(engine)
        if start:
            await dispatcher.start()
        return engine

    yield make
    for engine in engines:
        await engine.dispatcher.stop()
        await engine.pool.stop()
        for server in engine.servers.values():
            await server.stop()
        await engine.store.close()


class FakeProcess:
    """ManagedProcess's interface; starts instantly (or fails) and counts restarts."""

    def __init__(self, server: FakeServer, *, broken: bool = False) -> None:
        self.server = server
        self.broken = broken
        self.state = "stopped"
        self.url: str | None = None
        self.input_dir = self.output_dir = self.temp_dir = Path("/nonexistent")
        self.last_error: str | None = None
        self.restarts = 0
        self.busy: list[bool] = []
        self._callbacks: list[Callable[[Any], None]] = []

    def _set(self, state: str) -> None:
        self.state = state
        for cb in self._callbacks:
            cb(state)

    async def ensure_started(self) -> str:
        if self.broken:
            self.last_error = "no main.py in /nowhere"
            self._set("error")
            raise BackendError(self.last_error)
        self.url = f"fake://{self.server.name}"
        self._set("ready")
        return self.url

    async def stop(self) -> None:
        self._set("stopped")

    async def restart(self) -> None:
        self.restarts += 1
        self._set("ready")

    def log_tail(self, n: int = 20) -> list[str]:
        return ["line"]

    def on_state_change(self, cb: Callable[[Any], None]) -> None:
        self._callbacks.append(cb)

    def mark_busy(self, busy: bool) -> None:
        self.busy.append(busy)

    def note_activity(self) -> None:
        return None


class Process(FakeProcess):
    """A managed process whose stop takes its fake ComfyUI down (the prompt on it is lost) and
    whose start brings it up again, through the states ManagedProcess goes through."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__(server)
        self.starts = 0
        self.stops = 0

    async def ensure_started(self) -> str:
        if self.state not in ("ready", "busy"):
            self.starts += 1
            self._set("starting")
            await asyncio.sleep(0.01)
            self.server.up = True
            self.url = f"fake://{self.server.name}"
            self._set("ready")
        return f"fake://{self.server.name}"

    async def stop(self) -> None:
        if self.state != "stopped":
            self.stops += 1
            self.server.go_down()
            self.url = None
            self._set("stopped")

    async def restart(self) -> None:
        self.restarts += 1
        await self.stop()
        await self.ensure_started()


@pytest.fixture
async def managed_engine() -> AsyncIterator[Callable[..., Any]]:
    """An engine over a managed backend "m" (a `Process`) and, where asked, URL backends;
    `holds`: the admins' holds kept there (backends.holds); `eager`: "m" started at once."""
    made: list[Engine] = []

    async def make(
        *urls: str, holds: HoldFile | None = None, eager: bool = False
    ) -> tuple[Engine, Process]:
        store = open_store("memory://")
        await store.open()
        servers = {name: FakeServer(name=name) for name in ("m", *urls)}
        process = Process(servers["m"])
        specs = [BackendSpec(name="m", managed=SimpleNamespace(lazy=not eager))]
        specs += [BackendSpec(name=n, url=f"fake://{n}") for n in urls]
        pool = BackendPool.from_specs(
            specs,
            lambda url: FakeClient(servers[url.removeprefix("fake://")]),
            process_factory=lambda spec: process,
            health=HEALTH,
        )
        if holds is not None:
            pool.keep_holds(holds)
        await pool.start()
        dispatcher = Dispatcher(store, pool, open_output_storage("memory://"), FAST)
        engine = Engine(store, dispatcher.ctx.storage, pool, dispatcher, servers)
        made.append(engine)
        await dispatcher.start()
        return engine, process

    yield make
    for engine in made:
        await engine.dispatcher.stop()
        await engine.pool.stop()
        for server in engine.servers.values():
            await server.stop()
        await engine.store.close()


def status_of(job: Job) -> JobStatus:
    return job.status
