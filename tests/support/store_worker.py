"""A queue worker as a separate OS process, for the multi-process store tests.

    python -m tests.support.store_worker URL WORKER_ID --lease 1.0 --work 0.05:0.2 [--go]

Claims jobs until told to stop (or, with --until-empty, until the queue is empty), "runs" each
for a random time in the --work range while renewing its lease, then finishes it with a
compare-and-set fenced on its worker id. Prints one JSON line per outcome:
{"claimed": id, "attempt": n}, {"done": id} or {"lost": id} (the fence refused: the job was
swept and someone else has it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import Conflict
from comfyrun.store.factory import open_store


def emit(**data: object) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    lo, hi = (float(x) for x in args.work.split(":"))
    store = open_store(args.url)
    await store.open()
    try:
        emit(ready=args.worker_id)
        if args.go:
            await asyncio.to_thread(sys.stdin.readline)
        while True:
            job = await store.claim(args.worker_id, args.lease)
            if job is None:
                if args.until_empty and (await store.counts())[JobStatus.QUEUED] == 0:
                    return
                await store.wait_for_work(0.2)
                continue
            emit(claimed=job.id, attempt=job.attempts)
            deadline = time.monotonic() + random.uniform(lo, hi)
            held = True
            while held and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, args.lease / 3))
                held = await store.renew(job.id, args.worker_id, args.lease)
            try:
                await store.transition(
                    job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id=args.worker_id
                )
                emit(done=job.id)
            except Conflict:
                emit(lost=job.id)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("worker_id")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--work", default="0.0:0.0")
    parser.add_argument("--go", action="store_true", help="start on a line from stdin")
    parser.add_argument("--until-empty", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
