"""What a key's quota costs an enqueue, on SQLite and PostgreSQL.

    .venv/bin/python bench/tenant_enqueue.py [--kinds sqlite,postgres] [--n 1000]
        [--history 20000] [--pg-dsn postgresql://postgres@127.0.0.1:5432/test]

Enqueues `n` jobs one after another (median and p99 per call) as an admin (no owner: no quota
work) and as a key with a quota (`max_queued` and `per_minute` both just above `n`: in the
enqueue's transaction the key's row is locked, its unfinished counter read and its submissions
of the last minute counted, up to per_minute), after `history` other jobs of that key were
queued before that minute (they should cost nothing). PostgreSQL runs in a throwaway schema;
SQLite in a temp file.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from comfyrun.core.job import NewJob
from comfyrun.core.tenancy import ApiKey, Quota, Scope, mint_key
from comfyrun.store.base import JobStore
from comfyrun.store.factory import open_store

WORKFLOW = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}


async def timed(store: JobStore, n: int, owner: str | None) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        await store.enqueue(NewJob(workflow=WORKFLOW, owner=owner))
        took.append(time.perf_counter() - started)
    return took


def line(label: str, took: list[float]) -> str:
    took = sorted(took)
    p50 = statistics.median(took) * 1000
    p99 = took[int(len(took) * 0.99) - 1] * 1000
    return f"{label:<34} median {p50:6.2f} ms   p99 {p99:6.2f} ms"


async def run(kind: str, url: str, n: int, history: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        key_id, _, key_hash = mint_key()
        quota = Quota(max_queued=n + history + 1, per_minute=n + 1)
        scopes = frozenset({Scope.SUBMIT, Scope.READ})
        await store.create_api_key(ApiKey(key_id, "bench", key_hash, scopes, quota, time.time()))
        spacing = 120.0 / (n + 1)  # never more than half the per_minute bound in a minute
        old = time.time() - history * spacing - 120.0
        for i in range(history):  # before this minute, still queued
            await store.enqueue(NewJob(workflow=WORKFLOW, owner=key_id), now=old + i * spacing)
        print(f"{kind}: {n} enqueues each, the key with {history} queued jobs already")
        print("  " + line("admin (no owner)", await timed(store, n, None)))
        print("  " + line("key with max_queued + per_minute", await timed(store, n, key_id)))
    finally:
        await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default="sqlite,postgres")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--history", type=int, default=20000)
    ap.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    for kind in args.kinds.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                await run(kind, f"sqlite:///{Path(tmp) / 'q.db'}", args.n, args.history)
        else:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            try:
                await run(kind, f"{args.pg_dsn}?schema={schema}", args.n, args.history)
            finally:
                with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    asyncio.run(main())
