"""GET /object_info from a fleet of lazy managed backends (emulator folders run as child
processes, like ComfyUI checkouts): cold (nothing known: the request starts the backends and
waits for their definitions), warm (the same server again), and after a restart of comfyrun on
the same SQLite file (answered from the store; no backend is started).

    .venv/bin/python bench/object_info_cold.py [--backends 2] [--n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.comfy.emulator.folder import make_comfy_folder
from comfyrun.config import BackendConfig, Settings
from comfyrun.outputs.memory import MemoryOutputStorage


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext]]:
    app = create_app(settings, storage=MemoryOutputStorage())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=300
        ) as client:
            yield client, app.state.ctx


async def timed_get(client: httpx.AsyncClient) -> tuple[float, int, int]:
    start = time.perf_counter()
    answer = await client.get("/object_info")
    return time.perf_counter() - start, answer.status_code, len(answer.content)


def started(ctx: AppContext) -> int:
    return sum(1 for b in ctx.pool.backends if b.process is not None and b.process.pid)


async def main(backends: int, n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="comfyrun-bench-"))
    configs = [
        BackendConfig(name=f"gpu-{i}", comfy_path=make_comfy_folder(root / f"ComfyUI-{i}"))
        for i in range(backends)
    ]
    settings = Settings(
        data_dir=root / "data", db_url=f"sqlite:///{root / 'db.sqlite'}", backends=configs
    )
    async with running(settings) as (client, ctx):
        cold, status, size = await timed_get(client)
        print(
            f"cold:    {cold * 1000:8.1f} ms  {status}  {size / 1e6:.2f} MB  "
            f"backends started: {started(ctx)}/{backends}"
        )
        warm = [(await timed_get(client))[0] for _ in range(n)]
        print(f"warm:    {statistics.median(warm) * 1000:8.1f} ms median of {n}")
    async with running(settings) as (client, ctx):
        first, status, size = await timed_get(client)
        again = [(await timed_get(client))[0] for _ in range(n)]
        print(
            f"restart: {first * 1000:8.1f} ms first  {status}  {size / 1e6:.2f} MB, "
            f"{statistics.median(again) * 1000:.1f} ms median after; "
            f"backends started: {started(ctx)}/{backends}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.backends, args.n))
