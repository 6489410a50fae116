"""Memory with a deep queue: RSS of `comfyrun serve` holding N queued jobs.

    .venv/bin/python bench/queue_memory.py --jobs 100000

Fills a SQLite queue with N jobs through the store (as N submissions would leave it), starts
`comfyrun serve --emulator 1` on it, lets it work and answer the usual reads (stats, a page of
jobs, a queue position, a submission), and reports the server's RSS (its own process, not the
emulator's) against an empty queue's, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.api import ServerProcess

from comfyrun.core.job import NewJob
from comfyrun.store.sqlite import SQLiteStore

WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "m"}},
}


async def fill(path: Path, n: int) -> float:
    store = SQLiteStore(str(path))
    await store.open()
    start = time.perf_counter()
    try:
        for first in range(0, n, 2000):
            await asyncio.gather(
                *(
                    store.enqueue(NewJob(workflow=WORKFLOW, metadata={"i": str(i)}))
                    for i in range(first, min(n, first + 2000))
                )
            )
    finally:
        await store.close()
    return n / (time.perf_counter() - start)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(tmp: Path, name: str, db: Path) -> tuple[float, float]:
    data = tmp / name
    data.mkdir()
    server = ServerProcess(
        ["serve", "--port", "0", "--emulator", "1", "--db", f"sqlite:///{db}",
         "--data-dir", str(data), "--log-level", "WARNING"],
        log_path=tmp / f"{name}.log",
        env={"COMFYRUN_QUEUE_MAX": "10000000"},
    )  # fmt: skip
    server.wait_ready(120)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            for _ in range(600):
                if (await http.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3)  # the worker at work on the queue
            await http.get("/api/v2/stats")
            page = (await http.get("/api/v2/jobs", params={"status": "queued"})).json()
            if page["jobs"]:
                await http.get(f"/api/v2/jobs/{page['jobs'][-1]['id']}")
            r = await http.post("/api/v2/jobs", json={"workflow": WORKFLOW})
            r.raise_for_status()
            await asyncio.sleep(2)
            return rss_mb(server.proc.pid), time.monotonic()
    finally:
        server.stop()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-qmem-"))
    rate = await fill(tmp / "deep.db", args.jobs)
    await fill(tmp / "empty.db", 0)
    deep, _ = await measure(tmp, "deep", tmp / "deep.db")
    empty, _ = await measure(tmp, "empty", tmp / "empty.db")
    print(
        f"comfyrun serve RSS, {args.jobs:,} queued jobs: {deep:.0f} MB (empty queue: {empty:.0f} MB)"
    )
    print(f"  (filling the queue through the SQLite store: {rate:,.0f} enqueues/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
