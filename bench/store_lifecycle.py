"""A job's whole life in the SQLite store, by workflow size: what it costs to keep it durable.

    .venv/bin/python bench/store_lifecycle.py [--sizes 0.1,4,34] [--jobs 1500] [--concurrency 16]

Each job: enqueue, claim, record_placement twice (submitted, started), succeed; `concurrency`
at once (group commit shares their fsyncs), in a fresh database per size, after a warm-up.
Prints jobs/s, this process's CPU a job (the store's thread included) and the bytes it wrote a
job (/proc/self/io wchar: the WAL and its checkpoints into the database). The workflow is built
before the clock starts. Sizes are the workflow's JSON in KB (a text prompt node repeated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from comfyrun.core.job import JobStatus, NewJob
from comfyrun.core.state import Event
from comfyrun.store.factory import open_store


def workflow(kb: float, seed: int) -> dict[str, Any]:
    node = {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat " * 8}}
    nodes = max(1, round(kb * 1000 / len(json.dumps(node))))
    wf: dict[str, Any] = {str(n + 10): node for n in range(nodes)}
    wf["3"] = {"class_type": "KSampler", "inputs": {"seed": seed}}
    return wf


def written() -> int:
    fields = Path("/proc/self/io").read_text().split()
    return int(fields[fields.index("wchar:") + 1])


async def one_size(kb: float, jobs: int, concurrency: int) -> str:
    folder = tempfile.mkdtemp(prefix="comfyrun-life-")
    store = open_store(f"sqlite:///{folder}/db.sqlite")
    await store.open()
    try:
        sem = asyncio.Semaphore(concurrency)

        async def life(wf: dict[str, Any]) -> None:
            async with sem:
                await store.enqueue(NewJob(workflow=wf))
                job = await store.claim("w1", 60)
                assert job is not None
                for started in (None, time.time()):
                    await store.record_placement(
                        job.id, "w1", backend="b", prompt_id=job.id, execution_started_at=started
                    )
                await store.transition(
                    job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id="w1"
                )

        await asyncio.gather(*(life(workflow(kb, i)) for i in range(200)))  # warm-up
        flows = [workflow(kb, i) for i in range(jobs)]
        size = len(json.dumps(flows[0])) / 1000
        before, cpu, start = written(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(life(wf) for wf in flows))
        wall = time.perf_counter() - start
        cpu_ms = (time.process_time() - cpu) / jobs * 1000
        kib = (written() - before) / jobs / 1024
        return (
            f"workflow {size:6.1f} KB  {jobs / wall:7.0f} jobs/s  CPU {cpu_ms:5.2f} ms a job  "
            f"written {kib:6.1f} KiB a job"
        )
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> None:
    print(f"SQLite store, a job's life, {args.concurrency} at once, {args.jobs} jobs per size")
    for kb in (float(s) for s in args.sizes.split(",")):
        print("  " + await one_size(kb, args.jobs, args.concurrency))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0.1,4,34", help="workflow sizes, KB")
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
