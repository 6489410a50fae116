"""The ComfyUI client's own overhead per prompt, against a zero-work emulator.

Measures submit → result for prompts run one after another (the two paths alternating prompt
by prompt), with ComfyClient (`run`: watch,
POST /prompt, websocket events, tracker, result) and with the smallest raw loop that does the
same job (httpx POST + one `websockets` connection, waiting for `executing` node=None). The
difference is what the client adds. Then the same with N prompts submitted at once.

    .venv/bin/python bench/client_overhead.py [--n 300] [--concurrent 200] [--url http://...]

Without --url it starts the emulator in this process (port 0, files under a temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from comfyrun.comfy import ComfyClient


def workflow(i: int) -> dict[str, Any]:
    """No files, no pixels: a string shown by PreviewAny (varied so nothing is cached)."""
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": f"bench {i} {uuid.uuid4()}"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


class RawLoop:
    """The minimum: one socket, a future per prompt id, settled on `executing` node=None."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.http = httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self.task = asyncio.create_task(self._read(ready))
        await ready.wait()

    async def _read(self, ready: asyncio.Event) -> None:
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
            ready.set()
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue
                msg = json.loads(frame)
                data = msg.get("data") or {}
                if msg.get("type") == "executing" and data.get("node") is None:
                    fut = self.waiting.pop(str(data.get("prompt_id")), None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    async def run(self, prompt: dict[str, Any]) -> None:
        prompt_id = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.waiting[prompt_id] = fut
        body = {"prompt": prompt, "prompt_id": prompt_id, "client_id": self.client_id}
        response = await self.http.post("/prompt", json=body)
        response.raise_for_status()
        await fut

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.http.aclose()


@asynccontextmanager
async def server(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    from comfyrun.comfy.emulator import EmulatorConfig, start_emulator

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = EmulatorConfig(
            port=0, output_dir=root / "out", input_dir=root / "in", temp_dir=root / "temp"
        )
        async with start_emulator(config) as emu:
            yield emu.url


async def sequential(run: Callable[[dict[str, Any]], Awaitable[Any]], n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await run(workflow(i))
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def concurrent(run: Callable[[dict[str, Any]], Awaitable[Any]], n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(run(workflow(i)) for i in range(n)))
    return time.perf_counter() - t0


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    async with server(args.url) as url:
        client = ComfyClient(url, timeout=30.0)
        await client.start()
        raw = RawLoop(url)
        await raw.start()

        async def client_run(prompt: dict[str, Any]) -> None:
            result = await client.run(prompt, timeout=60)
            result.raise_for_status()

        paths = {"ComfyClient.run": client_run, "raw httpx+websockets": raw.run}
        try:
            for run in paths.values():  # warm both paths up
                await sequential(run, args.warmup)
            # Alternate the two paths prompt by prompt, so load on the machine hits both alike.
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.n):
                for name, run in paths.items():
                    times[name] += await sequential(run, 1)
            rates: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, run in paths.items():
                    rates[name].append(args.concurrent / await concurrent(run, args.concurrent))
            rows = [
                (name, statistics.median(t), p(t, 0.99), statistics.median(rates[name]))
                for name, t in times.items()
            ]
        finally:
            await raw.close()
            await client.close()

    print(
        f"server: {args.url or 'in-process emulator'}; {args.n} sequential prompts, "
        f"{args.concurrent} concurrent"
    )
    print(f"{'path':<22} {'median ms':>10} {'p99 ms':>10} {'concurrent jobs/s':>18}")
    for name, median, p99, rate in rows:
        print(f"{name:<22} {median:>10.2f} {p99:>10.2f} {rate:>18.0f}")
    (client_row, raw_row) = rows
    print(
        f"client overhead: median {client_row[1] - raw_row[1]:+.2f} ms, "
        f"p99 {client_row[2] - raw_row[2]:+.2f} ms per prompt"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sequential prompts per path")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=200, help="prompts submitted at once")
    parser.add_argument("--rounds", type=int, default=3, help="concurrent rounds (median)")
    parser.add_argument("--url", default=None, help="an already running ComfyUI or emulator")
    asyncio.run(main(parser.parse_args()))
