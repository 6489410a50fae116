"""Job store throughput and claim latency, on SQLite and PostgreSQL.

    .venv/bin/python bench/store_bench.py [--kinds sqlite,postgres] [--n 2000]
        [--sizes 1000,1000000] [--concurrency 1,16]
        [--pg-dsn postgresql://postgres@127.0.0.1:5432/test]

For each store: enqueue throughput (one job per call; 1 task, then 16 tasks at once), claim
throughput (claiming those jobs back, likewise), then claim latency with the queue bulk-filled (one INSERT transaction for
SQLite, COPY for PostgreSQL, never enqueue one by one) to each size. With the partial claim
index the latency should not grow with the queue. PostgreSQL runs in a throwaway schema; SQLite
in a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from comfyrun.core.job import JobStatus, NewJob
from comfyrun.store.base import JobStore
from comfyrun.store.factory import open_store

WORKFLOW = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
}
WORKFLOW_JSON = '{"3":{"class_type":"KSampler","inputs":{"seed":1}}}'
LATENCY_CLAIMS = 200


@dataclass
class Row:
    store: str
    metric: str
    value: str


def fill_rows(count: int, start: float) -> Iterator[tuple[str, int, float]]:
    rng = random.Random(count)
    for i in range(count):
        yield str(uuid.uuid4()), rng.randint(0, 9), start + i * 1e-3


def fill_sqlite(path: str, count: int, start: float) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA busy_timeout = 60000")
        rows = list(fill_rows(count, start))
        conn.executemany(
            "INSERT INTO jobs (id, status, priority, created_at, next_run_at) "
            "VALUES (?, 'queued', ?, ?, ?)",
            ((i, p, t, t) for i, p, t in rows),
        )
        conn.executemany(  # a job's workflow has a table of its own (0014_job_workflows)
            "INSERT INTO job_workflows (job_id, workflow) VALUES (?, ?)",
            ((i, WORKFLOW_JSON) for i, _, _ in rows),
        )
        conn.execute("ANALYZE")


def fill_postgres(dsn: str, schema: str, count: int, start: float) -> None:
    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY jobs (id, status, priority, workflow, created_at, next_run_at) FROM STDIN"
            ) as copy,
        ):
            for i, p, t in fill_rows(count, start):
                copy.write_row((i, "queued", p, WORKFLOW_JSON, t, t))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE jobs")


async def throughput(store: JobStore, n: int, concurrency: int) -> tuple[float, float]:
    """Enqueue `n` jobs, then claim them all, each with `concurrency` tasks at once."""

    async def enqueue(count: int) -> None:
        for _ in range(count):
            await store.enqueue(NewJob(workflow=WORKFLOW))

    async def claim(worker: str) -> int:
        claimed = 0
        while await store.claim(worker, 300) is not None:
            claimed += 1
        return claimed

    shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    t0 = time.perf_counter()
    await asyncio.gather(*(enqueue(k) for k in shares))
    enqueue_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    claimed = await asyncio.gather(*(claim(f"bench-{i}") for i in range(concurrency)))
    claim_rate = n / (time.perf_counter() - t0)
    assert sum(claimed) == n, (claimed, n)
    return enqueue_rate, claim_rate


async def claim_latency(store: JobStore) -> tuple[float, float]:
    samples = []
    for _ in range(LATENCY_CLAIMS):
        t0 = time.perf_counter()
        job = await store.claim("bench", 300)
        samples.append((time.perf_counter() - t0) * 1000)
        assert job is not None
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def bench_kind(kind: str, args: argparse.Namespace, rows: list[Row]) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        url = f"sqlite:///{db}" if kind == "sqlite" else f"{args.pg_dsn}?schema={schema}"
        store = open_store(url)
        await store.open()
        try:
            for concurrency in args.concurrency:
                enq, clm = await throughput(store, args.n, concurrency)
                label = f"n={args.n}, {concurrency} concurrent"
                rows.append(Row(kind, f"enqueue jobs/s ({label})", f"{enq:,.0f}"))
                rows.append(Row(kind, f"claim jobs/s ({label})", f"{clm:,.0f}"))
            queued = 0
            for size in args.sizes:
                t0 = time.perf_counter()
                extra = size - queued
                if kind == "sqlite":
                    await asyncio.to_thread(fill_sqlite, db, extra, 1e9 + queued)
                else:
                    await asyncio.to_thread(fill_postgres, args.pg_dsn, schema, extra, 1e9 + queued)
                fill_s = time.perf_counter() - t0
                p50, p95 = await claim_latency(store)
                queued = size - LATENCY_CLAIMS
                rows.append(
                    Row(
                        kind,
                        f"claim latency, {size:,} queued",
                        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms (fill {fill_s:.1f} s)",
                    )
                )
                back, _ = await store.enqueue(NewJob(workflow=WORKFLOW))
                front, _ = await store.enqueue(NewJob(workflow=WORKFLOW, priority=100))
                queued += 2
                for name, call in (
                    ("queue_position(first job)", store.queue_position(front.id)),
                    ("queue_position(last job)", store.queue_position(back.id)),
                    ("oldest_queued_at()", store.oldest_queued_at()),
                    ("counts()", store.counts()),
                    ("list(statuses=[running])", store.list(statuses=[JobStatus.RUNNING])),
                ):
                    t0 = time.perf_counter()
                    await call
                    ms = (time.perf_counter() - t0) * 1000
                    rows.append(Row(kind, f"{name}, {size:,} queued", f"{ms:.1f} ms"))
        finally:
            await store.close()
            if kind == "postgres":
                with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("store", "metric", "value")]
    widths = [max(w, len(h)) for w, h in zip(widths, ("store", "metric", "value"), strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format("store", "metric", "value"))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(r.store, r.metric, r.value))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="sqlite,postgres")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--concurrency", default="1,16", help="tasks at once, per run")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    rows: list[Row] = []
    for kind in args.kinds.split(","):
        await bench_kind(kind, args, rows)
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
