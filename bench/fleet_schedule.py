"""Fleet scheduling bench: 4 emulated ComfyUI backends, jobs of mixed lengths (sampler steps of
--step-ms each). Prints how long any backend sat idle while a job it could run was waiting, and
the makespan against a greedy longest-first (LPT) schedule of the same job lengths.

    .venv/bin/python bench/fleet_schedule.py
    .venv/bin/python bench/fleet_schedule.py --jobs 40 --order longest-first --store sqlite
    .venv/bin/python bench/fleet_schedule.py --queue-order fifo   # the queue in submission order

Job lengths are what the emulators recorded (execution_start -> execution_success of each
prompt). "greedy, same order" is list scheduling in submission order with zero overhead: what a
perfect first-come-first-served dispatcher reaches; "LPT" also reorders the jobs longest first.
The jobs are queued the way the service queues them: with --queue-order longest_first (the
default setting) each ranks by its cost estimated from the workflow (comfyrun.core.queue_order),
so the queue itself is longest first; with fifo the gap to LPT includes the ordering effect.
Idle-while-waiting is reported in full and as gaps longer than --handover-ms (comfyrun's own
hand-over: notice the backend freed, take a held prompt back, submit it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.fleet

from tests.support.emulator import text_to_image_workflow
from tests.support.fleet import (
    Wait,
    greedy_makespan,
    history_runs,
    idle_while_waiting,
    wait_all,
)

from comfyrun.backends.health import HealthSettings
from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator import EmulatorConfig, start_emulator
from comfyrun.core.job import JobStatus, NewJob
from comfyrun.core.queue_order import QueueOrder, estimate_cost, head_start
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store

#: Sampler steps per job: many short jobs, some long ones.
MIX = (4, 4, 8, 8, 8, 16, 16, 32, 64, 96)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    steps = [MIX[i % len(MIX)] for i in range(args.jobs)]
    if args.order == "shuffled":
        rng.shuffle(steps)
    else:
        steps.sort(reverse=True)
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for i in range(args.backends):
            root = tmp / f"emu{i}"
            cfg = EmulatorConfig(
                output_dir=root / "output",
                input_dir=root / "input",
                temp_dir=root / "temp",
                step_time_s=args.step_ms / 1000,
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
        dispatcher = Dispatcher(store, pool, storage, DispatchSettings(progress_interval_s=0.5))
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        t0 = time.time()
        order = QueueOrder(args.queue_order)
        jobs = []
        for i, n in enumerate(steps):
            wf = text_to_image_workflow(i, n, f"p{i}", prefix="f")
            ahead = head_start(estimate_cost(wf), order, args.aging_s)
            jobs.append((await store.enqueue(NewJob(workflow=wf, head_start_s=ahead)))[0])
        done = await wait_all(store, jobs)
        runs = await history_runs(urls)
    by_prompt = {r.prompt_id: r for r in runs}
    ran = [by_prompt[str(j.prompt_id)] for j in done]
    waits = [
        Wait(j.id, j.created_at, by_prompt[str(j.prompt_id)].start, frozenset(urls)) for j in done
    ]
    report = idle_while_waiting(runs, waits, urls)
    lengths = [r.end - r.start for r in ran]
    makespan = max(r.end for r in runs) - t0
    handover = args.handover_ms / 1000
    return {
        "ok": sum(j.status is JobStatus.SUCCEEDED for j in done),
        "prompts": len(runs),
        "idle_total": report.total_s,
        "idle_gaps": len(report.gaps),
        "idle_longest": report.longest_s,
        "idle_beyond": sum(max(0.0, e - s - handover) for _, s, e in report.gaps),
        "makespan": makespan,
        "lpt": greedy_makespan(lengths, args.backends, longest_first=True),
        "same_order": greedy_makespan(lengths, args.backends, longest_first=False),
        "work": sum(lengths),
        "gaps": [(b, s - t0, e - t0) for b, s, e in report.gaps],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=50.0)
    parser.add_argument("--order", choices=("shuffled", "longest-first"), default="shuffled")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument(
        "--queue-order", choices=[o.value for o in QueueOrder], default=QueueOrder.LONGEST_FIRST
    )
    parser.add_argument("--aging-s", type=float, default=60.0, help="the queue_aging_s setting")
    parser.add_argument("--handover-ms", type=float, default=250.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gaps", action="store_true", help="list every idle-while-waiting gap")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        r = await run(args, Path(tmp))
    print(
        f"{args.jobs} jobs ({r['ok']} ok, {r['prompts']} prompts run), {args.backends} backends, "
        f"{args.step_ms:g} ms/step, order {args.order}, queue {args.queue_order}, "
        f"store {args.store}; "
        f"work {r['work']:.2f} s"
    )
    print(
        f"idle while a runnable job waited: {r['idle_total'] * 1000:.0f} ms in {r['idle_gaps']} "
        f"gaps (longest {r['idle_longest'] * 1000:.0f} ms; beyond a {args.handover_ms:g} ms "
        f"hand-over: {r['idle_beyond'] * 1000:.0f} ms)"
    )
    if args.gaps:
        for backend, start, end in r["gaps"]:
            print(f"  {backend}: idle {start:8.3f} .. {end:8.3f} s ({(end - start) * 1000:.0f} ms)")
    print(
        f"makespan {r['makespan']:.2f} s (from the first submission); greedy same order "
        f"{r['same_order']:.2f} s ({(r['makespan'] / r['same_order'] - 1) * 100:+.1f} %); "
        f"greedy longest-first {r['lpt']:.2f} s ({(r['makespan'] / r['lpt'] - 1) * 100:+.1f} %)"
    )


if __name__ == "__main__":
    asyncio.run(main())
