"""A big batch and a small job: how long a 10,000-item batch takes to be accepted, and how soon
a single job submitted while it runs starts (it should wait at most about one job slot: the
running jobs' duration divided by the backends, not the batch's thousands of queued jobs).

    .venv/bin/python bench/batch.py [--items 10000] [--emulators 2] [--steps 8]
        [--step-time 0.03] [--db sqlite|postgresql://…]

Runs `comfyrun serve` in this process (SQLite in a temporary folder by default) with N
in-process emulated ComfyUI backends and one template (text to image, `seed` a parameter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from comfyrun.cli.server import running_server
from comfyrun.client import ComfyrunClient
from comfyrun.config import load_settings


def text_to_image(steps: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                "latent_image": ["4", 0], "seed": 1, "steps": steps, "cfg": 7.0,
                "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "b"}},
    }  # fmt: skip


async def until_running(client: ComfyrunClient, job_id: str) -> float:
    """Seconds until the job's stream says running (or it ended)."""
    t0 = time.perf_counter()
    async for ev in client.events(job_id):
        if ev.event == "status" and ev.data.get("status") != "queued":
            break
    return time.perf_counter() - t0


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-batch-bench-"))
    folder = tmp / "workflows"
    folder.mkdir()
    (folder / "t2i.json").write_text(json.dumps(text_to_image(args.steps)))
    (folder / "t2i.params.json").write_text(json.dumps({"seed": {"node": "5", "input": "seed"}}))
    db = f"sqlite:///{tmp / 'comfyrun.db'}" if args.db == "sqlite" else args.db
    settings = load_settings(
        None,
        data_dir=tmp,
        db_url=db,
        port=0,
        emulators=args.emulators,
        emulator_mode="inprocess",
        emulator_step_time_s=args.step_time,
        workflows_dir=folder,
        queue_max=args.items * 5,
        api_keys=[],
    )
    settings.backends = []
    async with running_server(settings) as url, ComfyrunClient(url, timeout=120) as client:
        # warm up: one job through each backend, so object_info is cached
        for _ in range(args.emulators):
            job = await client.run_workflow("t2i", {"seed": 0})
            await client.wait(job["id"], timeout=60)

        items = [{"params": {"seed": i}} for i in range(args.items)]
        t0 = time.perf_counter()
        batch = await client.create_batch("t2i", items=items)
        accept_s = time.perf_counter() - t0
        print(f"batch of {batch['total']:,} items accepted in {accept_s:.2f} s (target < 5 s)")

        # let the batch run a while, then measure a job slot from its finished jobs
        page = await client.batch_jobs(batch["id"], limit=4 * args.emulators)
        durations = []
        for queued in page["jobs"]:
            job = await client.wait(queued["id"], timeout=120)
            if job["status"] == "succeeded" and job["metrics"].get("execution_ms"):
                durations.append(job["metrics"]["execution_ms"] / 1000)
        slot_s = statistics.median(durations) if durations else float("nan")

        waits = []
        for i in range(args.singles):
            single = await client.submit(text_to_image(args.steps))
            waits.append(await until_running(client, single["id"]))
            await client.wait(single["id"], timeout=120)
            print(f"  single job {i + 1}: started {waits[-1]:.2f} s after submission")
        state = await client.batch(batch["id"])
        ahead = state["counts"]["queued"]
        print(
            f"a job runs {slot_s:.2f} s on each of {args.emulators} backends "
            f"(one slot frees every ~{slot_s / args.emulators:.2f} s); single jobs started "
            f"after {statistics.median(waits):.2f} s median, {max(waits):.2f} s max, "
            f"with {ahead:,} batch jobs still queued (FIFO would have made them wait "
            f"~{ahead * slot_s / args.emulators / 60:.0f} min)"
        )
        t0 = time.perf_counter()
        await client.cancel_batch(batch["id"])
        print(f"batch canceled in {time.perf_counter() - t0:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--emulators", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-time", type=float, default=0.03)
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--db", default="sqlite")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
