"""Claim latency by job type on SQLite: a worker that serves some types claims behind a deep
queue of another type.

    .venv/bin/python bench/claim_by_type.py [--depth 100000] [--rounds 200]

The queue is bulk-filled with `depth` comfy jobs (one INSERT transaction), plus a few image and
ffmpeg jobs at its back. Reported (median of `rounds` claims, each put back by a requeue):
a claim of any type, of comfy (the dispatcher's), of image alone, and of image+ffmpeg (a
handler lane's), each finding its job at the head of its type's range of the claim index.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from comfyrun.core.job import JobStatus, NewJob
from comfyrun.core.state import Event
from comfyrun.store.base import Changes
from comfyrun.store.migrate import migrate_sqlite
from comfyrun.store.sqlite import SQLiteStore


def fill(path: Path, depth: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(conn)
    rows = [(str(uuid.uuid4()), "queued", float(i), float(i)) for i in range(depth)]
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (id, status, created_at, next_run_at) VALUES (?,?,?,?)", rows
    )
    conn.executemany(  # a job's workflow has a table of its own (0014_job_workflows)
        "INSERT INTO job_workflows (job_id, workflow) VALUES (?, '{}')", [(r[0],) for r in rows]
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def median_claim_ms(
    store: SQLiteStore, types: Sequence[str] | None, rounds: int, now: float
) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        job = await store.claim("bench", 30, now=now, types=types)
        times.append((time.perf_counter() - start) * 1e3)
        assert job is not None, types
        await store.transition(
            job.id,
            Event.REQUEUE,
            expect=JobStatus.RUNNING,
            changes=Changes(clear_lease=True),
            now=now,
        )
    return statistics.median(times)


async def main(depth: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queue.db"
        fill(path, depth)
        store = SQLiteStore(str(path))
        await store.open()
        try:
            for kind in ("image", "ffmpeg"):
                await store.enqueue(NewJob(workflow={}, type=kind), now=depth + 1.0)
            now = depth + 10.0
            print(f"SQLite, {depth} queued comfy jobs, median of {rounds} claims:")
            for label, types in (
                ("any type", None),
                ("comfy (the dispatcher)", ["comfy"]),
                ("image, behind them", ["image"]),
                ("image + ffmpeg (a lane)", ["image", "ffmpeg"]),
            ):
                print(f"  {label:26} {await median_claim_ms(store, types, rounds, now):7.3f} ms")
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.depth, args.rounds))
