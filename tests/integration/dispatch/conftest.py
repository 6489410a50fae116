"""An engine over real HTTP and websockets: emulated ComfyUI servers, real ComfyClients, the
memory store, a local output folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from tests.support.emulator import running_emulator, text_to_image_workflow
from tests.support.engine import EngineBase

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator import Emulator
from comfyrun.core.job import JobStatus
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store

SETTINGS = DispatchSettings(
    lease_s=30.0,
    heartbeat_s=1.0,
    idle_wait_s=1.0,
    progress_interval_s=0.05,
    interrupt_grace_s=2.0,
    cancel_grace_s=3.0,
    sweep_interval_s=1.0,
    submit_timeout_s=10.0,
    stop_grace_s=3.0,
)
HEALTH = HealthSettings(interval_s=0.2, timeout_s=2.0, failure_threshold=2, down_interval_s=0.1)


class RecordingClient(ComfyClient):
    """A ComfyClient that counts POST /free and runs a hook after it (tests of OOM recovery)."""

    def __init__(self, base_url: str, on_free: Callable[[], None] | None = None) -> None:
        super().__init__(base_url, timeout=5.0)
        self.freed = 0
        self.on_free = on_free

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        await super().free(unload_models=unload_models, free_memory=free_memory)
        self.freed += 1
        if self.on_free is not None:
            self.on_free()


@dataclass
class Engine(EngineBase):
    emulators: dict[str, Emulator]
    clients: list[RecordingClient] = field(default_factory=list)
    on_free: Callable[[], None] | None = None
    wait_timeout: ClassVar[float] = 30.0


async def warm_up(engine: Engine) -> None:
    """Small jobs until each backend ran one, then their histories cleared: a fleet's first jobs
    wait for cold-start work (the backends' node catalogs read, first connections, the
    emulators' first run), which on a loaded machine took 1.3 to 1.7 s with every backend idle
    (a CI run of the longest-first test; in a later full run two of four backends idle 1.5 s
    while the others started at once): not what the scheduling tests measure."""
    urls = {name: str(e.url).rstrip("/") for name, e in engine.emulators.items()}
    async with httpx.AsyncClient(timeout=10) as http:
        cold = set(urls)
        # until every backend ran one: on a loaded machine one round may not reach them all
        for round_ in range(10):
            jobs = [
                await engine.submit(text_to_image_workflow(seed=1000 + 10 * round_ + i, steps=1))
                for i in range(len(cold))
            ]
            for job in jobs:
                assert (await engine.wait(job.id, timeout=60)).status is JobStatus.SUCCEEDED
            cold = {n for n in cold if not (await http.get(f"{urls[n]}/history")).json()}
            if not cold:
                break
        assert not cold, f"backends never warmed: {sorted(cold)}"
        for url in urls.values():
            (await http.post(f"{url}/history", json={"clear": True})).raise_for_status()


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def make(
            names: tuple[str, ...] = ("a",),
            settings: DispatchSettings = SETTINGS,
            start: bool = True,
            per: dict[str, dict[str, Any]] | None = None,
            labels: dict[str, dict[str, Any]] | None = None,
            health: HealthSettings = HEALTH,
            **emulator: Any,
        ) -> Engine:
            store = open_store("memory://")
            await store.open()
            stack.push_async_callback(store.close)
            storage = open_output_storage(f"file://{tmp_path / 'outputs'}")
            emulators = {
                name: await stack.enter_async_context(
                    running_emulator(tmp_path / name, **{**emulator, **(per or {}).get(name, {})})
                )
                for name in names
            }
            engine: Engine

            def client_factory(url: str) -> RecordingClient:
                client = RecordingClient(url, on_free=lambda: engine.on_free and engine.on_free())
                engine.clients.append(client)
                return client

            specs = [
                BackendSpec(name=n, url=str(e.url), labels=(labels or {}).get(n, {}))
                for n, e in emulators.items()
            ]
            pool = BackendPool.from_specs(specs, client_factory, health=health)
            dispatcher = Dispatcher(store, pool, storage, settings, worker_id="it-worker")
            engine = Engine(store, storage, pool, dispatcher, emulators)
            await pool.start()
            stack.push_async_callback(pool.stop)
            assert await pool.wait_ready(10.0)
            if start:
                await dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
            return engine

        yield make
