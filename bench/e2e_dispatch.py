"""Dispatcher-level bench: throughput (jobs/s) and the idle gap between consecutive jobs on one
backend, with zero-work emulated ComfyUI servers over real HTTP and websockets.

    .venv/bin/python bench/e2e_dispatch.py --jobs 400 --backends 1,2,4
    .venv/bin/python bench/e2e_dispatch.py --jobs 100 --backends 1 --step-ms 100

Each job is EmptyImage -> SaveImage (a distinct color, so nothing is cached and every job writes
and stores a real PNG), or with --step-ms a text-to-image graph whose one sampler step takes that
long (the case where handing the next job over early matters: the gap stays at ComfyUI's own
hand-over instead of comfyrun's per-job work). The idle gap is read from the emulators' own history: for consecutive
prompts on one backend, execution_start of the next minus execution_success of the previous
(millisecond timestamps, as ComfyUI records them). "prefetch off" runs the same with at most one
job per backend, to show what handing the next job over early buys.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator import EmulatorConfig, start_emulator
from comfyrun.core.job import TERMINAL, JobStatus, NewJob
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store


def workflow(i: int, step_ms: float) -> dict[str, Any]:
    if step_ms > 0:  # one sampler step of step_ms: a job with real work in ComfyUI
        return {
            "1": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
            },
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": f"p{i}"}},
            "3": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1},
            },
            "4": {
                "class_type": "KSampler",
                "inputs": {
                    "model": ["1", 0],
                    "positive": ["2", 0],
                    "negative": ["2", 0],
                    "latent_image": ["3", 0],
                    "seed": i,
                    "steps": 1,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                },
            },
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
            "6": {
                "class_type": "SaveImage",
                "inputs": {"images": ["5", 0], "filename_prefix": "b"},
            },
        }
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }


async def gaps_ms(url: str) -> list[float]:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        history = (await http.get("/history")).json()
    spans = []
    for entry in history.values():
        times = {name: data.get("timestamp") for name, data in entry["status"]["messages"]}
        if times.get("execution_start") and times.get("execution_success"):
            spans.append((times["execution_start"], times["execution_success"]))
    spans.sort()
    return [float(b[0] - a[1]) for a, b in itertools.pairwise(spans)]


async def run(
    n_jobs: int,
    n_backends: int,
    max_inflight: int,
    tmp: Path,
    store_url: str,
    step_ms: float = 0.0,
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        emulators = []
        for i in range(n_backends):
            root = tmp / f"emu{i}"
            cfg = EmulatorConfig(
                output_dir=root / "output",
                input_dir=root / "input",
                temp_dir=root / "temp",
                step_time_s=step_ms / 1000,
            )
            emulators.append(await stack.enter_async_context(start_emulator(cfg)))
        store = open_store(store_url)
        await store.open()
        stack.push_async_callback(store.close)
        storage = open_output_storage(f"file://{tmp / 'outputs'}")
        specs = [
            BackendSpec(name=f"b{i}", url=str(e.url), max_inflight=max_inflight)
            for i, e in enumerate(emulators)
        ]
        pool = BackendPool.from_specs(
            specs, ComfyClient, health=HealthSettings(interval_s=5.0, timeout_s=5.0)
        )
        await pool.start()
        stack.push_async_callback(pool.stop)
        await pool.wait_ready(30)
        dispatcher = Dispatcher(store, pool, storage, DispatchSettings(progress_interval_s=0.5))
        jobs = [
            (await store.enqueue(NewJob(workflow=workflow(i, step_ms))))[0] for i in range(n_jobs)
        ]
        started = time.perf_counter()
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        for job in jobs:  # wait for the last ones; the store wakes us on every event
            after = 0
            while (
                current := await store.get(job.id)
            ) is not None and current.status not in TERMINAL:
                events = await store.wait_for_event(job.id, after, 5.0)
                after = events[-1].id if events else after
        elapsed = time.perf_counter() - started
        done = [await store.get(j.id) for j in jobs]
        ok = sum(1 for j in done if j is not None and j.status is JobStatus.SUCCEEDED)
        gaps: list[float] = []
        for emulator in emulators:
            gaps.extend(await gaps_ms(str(emulator.url)))
        return {"elapsed": elapsed, "ok": ok, "gaps": gaps}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--backends", default="1,2,4")
    parser.add_argument("--store", default="memory://", help="memory:// or sqlite:///path")
    parser.add_argument(
        "--step-ms", type=float, default=0.0, help="work per job in ComfyUI (0: zero-work jobs)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"{'backends':>8} {'prefetch':>8} {'jobs':>6} {'ok':>6} {'s':>7} {'jobs/s':>8} "
        f"{'gap p50 ms':>10} {'gap p90 ms':>10} {'gap max':>8}"
    )
    for n in (int(x) for x in args.backends.split(",")):
        for inflight in (2, 1):
            with tempfile.TemporaryDirectory() as tmp:
                r = await run(args.jobs, n, inflight, Path(tmp), args.store, args.step_ms)
            gaps = r["gaps"]
            print(
                f"{n:>8} {'on' if inflight == 2 else 'off':>8} {args.jobs:>6} {r['ok']:>6} "
                f"{r['elapsed']:>7.2f} {args.jobs / r['elapsed']:>8.1f} "
                f"{statistics.median(gaps) if gaps else float('nan'):>10.1f} "
                f"{pct(gaps, 0.9):>10.1f} {max(gaps) if gaps else float('nan'):>8.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
