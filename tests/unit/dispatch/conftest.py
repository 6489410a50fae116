"""An engine (memory store, memory output storage, pool of fake ComfyUI servers, dispatcher)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from tests.support.engine import EngineBase, FakeClient, FakeServer

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.job import Job, JobStatus
from comfyrun.dispatch import Dispatcher, DispatchSettings
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
    ) -> Engine:
        store = open_store("memory://")
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


def status_of(job: Job) -> JobStatus:
    return job.status
