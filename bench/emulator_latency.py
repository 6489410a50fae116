"""Emulator latency and throughput, measured like latency_throughput.json measured ComfyUI.

Run from the repo root:

    .venv/bin/python bench/emulator_latency.py

EmptyImage 64x64 -> SaveImage; times are client-side from just before POST /prompt.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "src"),
]

from tests.support.emulator import running_emulator  # noqa: E402


def _workflow(color: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "bench"},
        },
    }


async def _one(
    session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, url: str, color: int
) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    async with session.post(
        f"{url}/prompt", json={"prompt": _workflow(color), "client_id": "bench"}
    ) as resp:
        prompt_id = (await resp.json())["prompt_id"]
    posted = time.perf_counter() - t0
    success = 0.0
    while True:
        message = json.loads((await ws.receive()).data)
        if message["type"] == "execution_success":
            success = time.perf_counter() - t0
        if message["type"] == "executing" and message["data"] == {
            "node": None,
            "prompt_id": prompt_id,
        }:
            return posted, success, time.perf_counter() - t0


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_emulator(Path(tmp)) as emu, aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{emu.url}/ws?clientId=bench")
            await ws.receive()
            for name, colors in (("distinct", list(range(1, 51))), ("identical", [7] * 51)):
                results = [await _one(session, ws, emu.url, c) for c in colors]
                results = results[1:] if name == "identical" else results
                for i, label in enumerate(
                    ("POST /prompt", "-> execution_success", "-> executing null")
                ):
                    ms = sorted(r[i] * 1000 for r in results)
                    print(
                        f"{name:9} {label:22} median {statistics.median(ms):6.2f} ms  p90 {ms[int(len(ms) * 0.9)]:6.2f} ms"
                    )
            t0 = time.perf_counter()
            pending = set()
            for color in range(1000, 1050):
                async with session.post(
                    f"{emu.url}/prompt", json={"prompt": _workflow(color), "client_id": "bench"}
                ) as resp:
                    pending.add((await resp.json())["prompt_id"])
            while pending:
                message = json.loads((await ws.receive()).data)
                if message["type"] == "executing" and message["data"]["node"] is None:
                    pending.discard(message["data"]["prompt_id"])
            took = time.perf_counter() - t0
            print(f"50 queued (sequential POSTs): {took:.3f} s total, {50 / took:.0f} jobs/s")
            await ws.close()


if __name__ == "__main__":
    asyncio.run(main())
