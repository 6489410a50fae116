"""Several OS processes on one queue: no job claimed twice while its lease holds, none starved,
and with workers SIGKILLed at random every job still ends exactly once."""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import time
from pathlib import Path

import pytest
from tests.support.store import new_job
from tests.support.store_procs import WorkerProc, spawn_worker, wait_ready

from comfyrun.core.job import JobStatus
from comfyrun.store.base import JobStore
from comfyrun.store.factory import open_store

pytestmark = pytest.mark.slow


async def opened(url: str) -> JobStore:
    store = open_store(url)
    await store.open()
    return store


async def test_concurrent_claims_take_each_job_once(db_url: str, tmp_path: Path) -> None:
    store = await opened(db_url)
    try:
        ids = [(await store.enqueue(new_job()))[0].id for _ in range(120)]
        workers = [
            spawn_worker(
                db_url,
                f"w{i}",
                tmp_path,
                "--lease",
                "60",
                # jobs long enough (20-40 ms, ~1 s in all) that every process is scheduled
                # while the queue still has work, so "starved" speaks of the queue, not the OS
                "--work",
                "0.02:0.04",
                "--go",
                "--until-empty",
            )
            for i in range(4)
        ]
        try:
            await asyncio.to_thread(wait_ready, workers)
            for w in workers:
                w.go()
            for w in workers:
                assert await asyncio.to_thread(w.proc.wait, 90) == 0, w.log.read_text()
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.proc.kill()
        claimed = [line["claimed"] for w in workers for line in w.read() if "claimed" in line]
        assert sorted(claimed) == sorted(ids)  # every job claimed, none twice
        per_worker = {w.worker_id: sum("claimed" in x for x in w.lines) for w in workers}
        assert all(n > 0 for n in per_worker.values()), per_worker  # none starved
        assert (await store.counts())[JobStatus.SUCCEEDED] == len(ids)
    finally:
        await store.close()


async def test_sigkilled_workers_lose_no_job(db_url: str, tmp_path: Path) -> None:
    """Workers are SIGKILLed at random and replaced; a sweeper requeues their jobs. In the end
    every job succeeded exactly once (one `succeeded` status event each, via fenced CAS)."""
    rng = random.Random(1234)
    store = await opened(db_url)
    workers: list[WorkerProc] = []
    n_jobs, lease = 60, 1.0
    try:
        ids = [
            (await store.enqueue(new_job(max_retries=100, retry_delay_s=0.02)))[0].id
            for _ in range(n_jobs)
        ]
        serial = 0

        def start() -> None:
            nonlocal serial
            serial += 1
            workers.append(
                spawn_worker(
                    db_url, f"w{serial}", tmp_path, "--lease", str(lease), "--work", "0.1:0.4"
                )
            )

        for _ in range(3):
            start()
        kills = 0
        deadline = time.monotonic() + 60  # a safety net: it takes ~10 s
        next_kill = time.monotonic() + rng.uniform(0.5, 1.0)
        while time.monotonic() < deadline:
            await store.sweep_expired_leases()
            counts = await store.counts()
            if counts[JobStatus.SUCCEEDED] == n_jobs:
                break
            if time.monotonic() >= next_kill:
                busy = [w for w in workers if w.proc.poll() is None and w.busy()]
                if busy and kills < 8:
                    victim = rng.choice(busy)  # mid-job, so a lease really is lost
                    victim.proc.send_signal(signal.SIGKILL)
                    victim.killed = True
                    kills += 1
                    start()
                next_kill = time.monotonic() + rng.uniform(0.4, 1.2)
            await asyncio.sleep(0.1)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                # killed too: one may have committed its last job and not yet printed "done"
                # (a fresh-clone run failed on that, taking the job for a lost one)
                w.proc.kill()
                w.killed = True
            await asyncio.to_thread(w.proc.wait, 30)
    try:
        counts = await store.counts()
        assert counts[JobStatus.SUCCEEDED] == n_jobs, counts
        assert kills >= 3
        succeeded_events: collections.Counter[str] = collections.Counter()
        for job_id in ids:
            for event in await store.events_since(job_id):
                if event.kind == "status" and event.data["status"] == "succeeded":
                    succeeded_events[job_id] += 1
        assert set(succeeded_events) == set(ids)
        assert set(succeeded_events.values()) == {1}  # exactly once each
        done = collections.Counter(x["done"] for w in workers for x in w.read() if "done" in x)
        assert set(done.values()) == {1}  # no worker saw a second completion go through
        killed = {w.worker_id for w in workers if w.killed}
        for job_id in set(ids) - set(done):
            # committed, then SIGKILLed before it could print "done": it must be a killed worker
            job = await store.get(job_id)
            assert job is not None and job.worker_id in killed
        # at least one job really was taken from a killed worker and run again
        attempts = [(await store.get(i)).attempts for i in ids]  # type: ignore[union-attr]
        assert max(attempts) >= 2
    finally:
        await store.close()
