"""End-to-end bench over real HTTP: what comfyrun adds per job, and how fast it goes.

    .venv/bin/python bench/e2e_overhead.py --jobs 200 --throughput-jobs 1000 --backends 4

1. Overhead: the same zero-work job (EmptyImage -> SaveImage, a distinct color each time) run
   one at a time (a) straight against an emulated ComfyUI (POST /prompt, websocket until done,
   GET /view of the image) and (b) through `comfyrun serve` (POST /api/v2/jobs?wait=, then GET
   the output). Overhead = (b) - (a), median and p99.
2. Throughput: `--throughput-jobs` jobs submitted at once to `comfyrun serve --emulator N`;
   jobs/s from the first submit until the last job is terminal.
3. Idle gap: for consecutive prompts on one backend, from the end of one (execution_success)
   to the start of the next (execution_start), read from each emulator's /history.

Each server runs as its own process (`comfyrun serve` with in-process emulators; the direct
baseline uses `python -m comfyrun.comfy.emulator`), on a SQLite queue in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.api import ServerProcess

from comfyrun.client import TERMINAL, ComfyrunClient

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench
from hot_path import comfy_face_run, start_emulator


def workflow(i: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i % 16_777_216},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": f"b{i}"},
        },
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def start_emulator_process(tmp: Path) -> tuple[asyncio.subprocess.Process, str]:
    return await start_emulator(tmp)


async def direct_run(http: httpx.AsyncClient, url: str, i: int) -> float:
    """Submit, follow the websocket to completion, fetch the image: ComfyUI without comfyrun."""
    return await comfy_face_run(http, url)


async def comfyrun_run(client: ComfyrunClient, http: httpx.AsyncClient, i: int) -> float:
    start = time.perf_counter()
    r = await http.post("/api/v2/jobs", params={"wait": 60}, json={"workflow": workflow(i)})
    job = r.json()
    assert job["status"] == "succeeded", job
    await http.get(job["outputs"][0]["url"])
    return time.perf_counter() - start


async def idle_gaps(http: httpx.AsyncClient, backend_urls: list[str]) -> list[float]:
    gaps: list[float] = []
    for url in backend_urls:
        history = (await http.get(f"{url}/history", params={"max_items": 100000})).json()
        spans = []
        for entry in history.values():
            times = {name: data.get("timestamp") for name, data in entry["status"]["messages"]}
            if times.get("execution_start") and times.get("execution_success"):
                spans.append((times["execution_start"], times["execution_success"]))
        spans.sort()
        gaps += [(b[0] - a[1]) / 1000 for a, b in itertools.pairwise(spans)]
    return gaps


def serve(tmp: Path, name: str, backends: int) -> ServerProcess:
    data = tmp / name
    data.mkdir()
    proc = ServerProcess(
        ["serve", "--port", "0", "--emulator", str(backends), "--data-dir", str(data),
         "--log-level", "WARNING"],
        log_path=tmp / f"{name}.log",
        env={"COMFYRUN_QUEUE_MAX": "1000000"},
    )  # fmt: skip
    proc.wait_ready(120)
    return proc


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-bench-"))
    rows: list[tuple[str, str]] = []
    async with httpx.AsyncClient(timeout=120) as http:
        emu, emu_url = await start_emulator_process(tmp)
        try:
            for i in range(10):  # warm up
                await direct_run(http, emu_url, 10_000_000 + i)
            direct = [await direct_run(http, emu_url, i) for i in range(args.jobs)]
        finally:
            emu.terminate()
            await emu.wait()

    server = serve(tmp, "one", 1)
    try:
        async with (
            ComfyrunClient(server.url) as client,
            httpx.AsyncClient(base_url=server.url, timeout=120) as http,
        ):
            for i in range(10):
                await comfyrun_run(client, http, 20_000_000 + i)
            through = [await comfyrun_run(client, http, i) for i in range(args.jobs)]
    finally:
        server.stop()
    overhead = [t - statistics.median(direct) for t in through]
    rows += [
        ("direct to ComfyUI, median / p99", f"{statistics.median(direct) * 1000:.1f} / {pct(direct, 99) * 1000:.1f} ms"),
        ("through comfyrun, median / p99", f"{statistics.median(through) * 1000:.1f} / {pct(through, 99) * 1000:.1f} ms"),
        ("overhead per job, median / p99", f"{statistics.median(overhead) * 1000:.1f} / {pct(overhead, 99) * 1000:.1f} ms"),
    ]  # fmt: skip

    server = serve(tmp, "many", args.backends)
    try:
        async with (
            ComfyrunClient(server.url, timeout=120) as client,
            httpx.AsyncClient(timeout=120) as http,
        ):
            sem = asyncio.Semaphore(64)

            async def submit(i: int) -> None:
                async with sem:
                    await client.submit(workflow(i))

            start = time.perf_counter()
            await asyncio.gather(*(submit(i) for i in range(args.throughput_jobs)))
            submitted = time.perf_counter() - start
            while True:
                stats = await client.stats()
                if sum(stats["counts"][s] for s in TERMINAL) >= args.throughput_jobs:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            backends = [b["url"] for b in await client.backends()]
            gaps = await idle_gaps(http, backends)
            ok = stats["counts"]["succeeded"]
    finally:
        server.stop()
    rows += [
        (f"throughput, {args.backends} zero-work backends", f"{args.throughput_jobs / elapsed:.1f} jobs/s ({ok}/{args.throughput_jobs} succeeded in {elapsed:.1f} s; submitting took {submitted:.1f} s)"),
        ("idle gap between jobs on a backend, median / p99", f"{statistics.median(gaps) * 1000:.1f} / {pct(gaps, 99) * 1000:.1f} ms" if gaps else "n/a"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"comfyrun e2e bench ({os.cpu_count()} CPUs, {args.jobs} sequential jobs)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="sequential jobs for the overhead")
    parser.add_argument("--throughput-jobs", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
