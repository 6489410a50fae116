"""Model-aware routing bench: 4 emulated ComfyUI backends, 4 checkpoints that take --load-s to
load (the emulator keeps the last one used in memory, as ComfyUI does on a small GPU), 200 jobs
in random checkpoint order. The same jobs run twice, each time on fresh backends: with
model-aware routing (a backend takes a queued job whose checkpoint it holds) and without it
(least-loaded placement in queue order). Prints throughput, checkpoint loads and the worst and
mean wait (submitted -> ComfyUI started the prompt) of each, side by side.

    .venv/bin/python bench/model_routing.py
    .venv/bin/python bench/model_routing.py --jobs 200 --load-s 1.0 --store memory

A checkpoint load is counted when a backend runs a job whose checkpoint is not the one its
previous job used (what the emulator then sleeps --load-s for).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from tests.support.emulator import text_to_image_workflow
from tests.support.fleet import history_runs, wait_all

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator import EmulatorConfig, start_emulator
from comfyrun.core.job import JobStatus, NewJob
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store


async def run_once(
    args: argparse.Namespace, tmp: Path, ckpts: list[str], routing: bool
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for i in range(args.backends):
            root = tmp / f"emu{i}"
            cfg = EmulatorConfig(
                output_dir=root / "output",
                input_dir=root / "input",
                temp_dir=root / "temp",
                step_time_s=args.step_ms / 1000,
                models={"checkpoints": sorted(set(ckpts))},
                load_s_per_file=args.load_s,
            )
            emulator = await stack.enter_async_context(start_emulator(cfg))
            urls[f"b{i}"] = str(emulator.url).rstrip("/")
        store_url = "memory://" if args.store == "memory" else f"sqlite:///{tmp / 'jobs.db'}"
        store = open_store(store_url)
        await store.open()
        stack.push_async_callback(store.close)
        storage = open_output_storage(f"file://{tmp / 'outputs'}")
        specs = [BackendSpec(name=name, url=url) for name, url in urls.items()]
        pool = BackendPool.from_specs(
            specs, ComfyClient, health=HealthSettings(interval_s=5.0, timeout_s=5.0)
        )
        await pool.start()
        stack.push_async_callback(pool.stop)
        await pool.wait_ready(30)
        settings = DispatchSettings(
            progress_interval_s=0.5,
            model_routing=routing,
            model_routing_window=args.window,
            model_routing_max_overtake=args.max_overtake,
        )
        dispatcher = Dispatcher(store, pool, storage, settings)
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        t0 = time.time()
        jobs = [
            (
                await store.enqueue(
                    NewJob(workflow=text_to_image_workflow(i, args.steps, f"p{i}", c, prefix="m"))
                )
            )[0]
            for i, c in enumerate(ckpts)
        ]
        done = await wait_all(store, jobs)
        runs = await history_runs(urls)
    by_prompt = {r.prompt_id: r for r in runs}
    ckpt_of = {str(j.prompt_id): c for j, c in zip(done, ckpts, strict=True)}
    loads = 0
    sequences = {}
    for name in urls:
        mine = sorted((r for r in runs if r.backend == name), key=lambda r: r.start)
        previous = None
        sequences[name] = "".join(str(ckpt_of.get(r.prompt_id, "?"))[5] for r in mine)
        for r in mine:
            loads += ckpt_of.get(r.prompt_id) != previous
            previous = ckpt_of.get(r.prompt_id)
    waits = [by_prompt[str(j.prompt_id)].start - j.created_at for j in done]
    makespan = max(r.end for r in runs) - t0
    return {
        "ok": sum(j.status is JobStatus.SUCCEEDED for j in done),
        "makespan": makespan,
        "throughput": len(done) / makespan,
        "busy": 100 * sum(r.end - r.start for r in runs) / (len(urls) * makespan),
        "loads": loads,
        "worst_wait": max(waits),
        "mean_wait": statistics.mean(waits),
        "sequences": sequences,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--load-s", type=float, default=0.5, help="seconds to load a checkpoint")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps per job")
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=DispatchSettings().model_routing_window)
    parser.add_argument(
        "--max-overtake", type=int, default=DispatchSettings().model_routing_max_overtake
    )
    parser.add_argument("--store", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sequences", action="store_true", help="print the checkpoints each backend ran, in order"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(args.seed)
    names = [f"ckpt-{i}.safetensors" for i in range(args.checkpoints)]
    ckpts = [rng.choice(names) for _ in range(args.jobs)]
    results = {}
    for routing in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            results[routing] = await run_once(args, Path(tmp), ckpts, routing)
    print(
        f"{args.jobs} jobs, {args.backends} backends, {args.checkpoints} checkpoints "
        f"(load {args.load_s:g} s), {args.steps} steps x {args.step_ms:g} ms, store {args.store}, "
        f"window {args.window}, max overtake {args.max_overtake}"
    )
    print(f"{'':24}{'model-aware':>14}{'least-loaded':>14}")
    on, off = results[True], results[False]
    rows = [
        ("jobs ok", "ok", "{:d}"),
        ("makespan (s)", "makespan", "{:.2f}"),
        ("throughput (jobs/s)", "throughput", "{:.2f}"),
        ("checkpoint loads", "loads", "{:d}"),
        ("backends busy (%)", "busy", "{:.0f}"),
        ("worst wait (s)", "worst_wait", "{:.2f}"),
        ("mean wait (s)", "mean_wait", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:24}{fmt.format(on[key]):>14}{fmt.format(off[key]):>14}")
    if args.sequences:
        for routing in (True, False):
            for name, seq in results[routing]["sequences"].items():
                print(f"{'on ' if routing else 'off'} {name}: {seq}")
    print(f"throughput ratio: {on['throughput'] / off['throughput']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
