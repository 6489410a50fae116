"""comfyrun over real HTTP and websockets with several emulated ComfyUI backends, for the
dialect tests: each test gets a fresh server (memory store, local output folder). Tests of
several nodes on PostgreSQL get a schema of their own (`pg_url`) and start `comfyrun`
processes on it (`start_nodes`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import ServerProcess, wait_until_ready
from tests.support.store import pg_schema_url

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.cli.server import serving_app
from comfyrun.config import Settings

BACKENDS = 3


@dataclass
class Server:
    url: str
    ctx: AppContext

    @property
    def emulator_urls(self) -> list[str]:
        return list(self.ctx.emulator_urls)

    async def set_faults(self, body: dict[str, Any]) -> None:
        """Apply the same fault settings to every emulated backend."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            for url in self.emulator_urls:
                answer = await client.post(f"{url}/emulator/faults", json=body)
                answer.raise_for_status()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every backend is ready (placement needs them)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0) as client:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                try:
                    backends = (await client.get("/api/v2/backends")).json()["backends"]
                except httpx.TransportError as exc:  # a slow start on a loaded machine
                    backends = [repr(exc)]
                if len(backends) == BACKENDS and all(
                    b["state"] in ("ready", "busy") for b in backends
                ):
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"backends not ready: {backends}")
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Server]:
    app = create_app(settings)
    async with serving_app(app, "127.0.0.1", 0, grace_s=3) as url:
        yield Server(url=url, ctx=app.state.ctx)


def dialect_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "db_url": "memory://",
        "api_keys": [],
        "emulators": BACKENDS,
        "emulator_step_time_s": 0.01,
        "emulator_mode": "inprocess",
        "retry_delay_s": 0.1,
        "default_max_retries": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(dialect_settings(tmp_path)) as srv:
        await srv.wait_ready()
        yield srv


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema, dropped afterwards."""
    with pg_schema_url() as url:
        yield url


async def start_nodes(
    procs: list[ServerProcess], tmp: Path, pg_url: str, backend: str, nodes: dict[str, str]
) -> None:
    """Start `comfyrun <role>` processes on `pg_url` (name -> role; a worker runs `backend`),
    each appended to `procs` as it starts (the caller kills them), ready when this returns."""
    outputs = (tmp / "outputs").as_uri()
    for name, role in nodes.items():
        more = ["--backend", backend] if role in ("worker", "serve") else []
        args = ["--port", "0", "--db", pg_url, "--outputs", outputs, "--data-dir", str(tmp / name)]
        proc = ServerProcess([role, *args, *more], log_path=tmp / f"{name}.log")
        procs.append(proc)
        await asyncio.to_thread(proc.wait_ready)
    for proc, role in zip(procs, nodes.values(), strict=True):
        if role in ("worker", "serve"):
            await wait_until_ready(proc.url)
