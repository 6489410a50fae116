"""kill -9 with jobs in flight: the server (SQLite) restarted, or one of two workers
(PostgreSQL) killed. Every job ends succeeded or failed; none is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import StartServer
from tests.support.emulator import image_workflow
from tests.support.emulator_process import emulator_process

from comfyrun.client import TERMINAL, ComfyrunClient

IN_FLIGHT = int(os.environ.get("COMFYRUN_ACCEPT_CRASH_JOBS", "500"))

#: Short leases, so the jobs a dead worker held come back within seconds.
FAST = {
    "COMFYRUN_LEASE_S": "4",
    "COMFYRUN_HEARTBEAT_S": "1",
    "COMFYRUN_SWEEP_INTERVAL_S": "1",
    "COMFYRUN_QUEUE_MAX": "100000",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


async def submit_all(client: ComfyrunClient, n: int) -> list[str]:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with sem:
            job = await client.submit(image_workflow(color=i, prefix=f"c{i}", size=8))
            return str(job["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def wait_until(client: ComfyrunClient, predicate: Any, timeout: float) -> dict[str, Any]:
    """Poll the server's stats (another process's state: there is nothing to await)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await client.stats()
        if predicate(stats):
            return stats
        assert time.monotonic() < deadline, f"timed out; last stats {stats}"
        await asyncio.sleep(0.2)


async def final_states(
    client: ComfyrunClient, ids: list[str], timeout: float
) -> list[dict[str, Any]]:
    def done(stats: dict[str, Any]) -> bool:
        c = stats["counts"]
        return bool(sum(c[s] for s in TERMINAL) >= len(ids))

    await wait_until(client, done, timeout)
    sem = asyncio.Semaphore(32)

    async def get(job_id: str) -> dict[str, Any]:
        async with sem:
            return await client.get(job_id)

    return list(await asyncio.gather(*(get(j) for j in ids)))


async def test_server_killed_and_restarted_loses_no_job_and_runs_none_twice(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The backends are emulators in processes of their own: they outlive the server, so
    the restarted server must follow the prompts they still hold, not send them again."""
    # 10 ms a node (40 ms a job, 10 s for all on two backends): running them takes longer than
    # submitting them, however loaded the machine, so the kill finds jobs in flight
    slow = ("--fault", "slow:0.01")
    with (
        emulator_process(tmp_path / "emu0", extra_args=slow) as emu0,
        emulator_process(tmp_path / "emu1", extra_args=slow) as emu1,
    ):
        db = f"sqlite:///{tmp_path / 'queue.db'}"
        args = ("--backend", emu0.url, "--backend", emu1.url, "--db", db)
        args += ("--data-dir", str(tmp_path / "data"))
        first = start_server("serve", *args, env=FAST)
        async with ComfyrunClient(first.url, timeout=60) as client:
            ids = await submit_all(client, IN_FLIGHT)
            await wait_until(client, lambda s: s["counts"]["succeeded"] >= 20, 120)
        first.kill(signal.SIGKILL)

        second = start_server("serve", *args, env=FAST)
        async with ComfyrunClient(second.url, timeout=60) as client:
            before = await client.stats()
            assert sum(before["counts"].values()) == IN_FLIGHT  # all recorded before the kill
            assert before["counts"]["succeeded"] < IN_FLIGHT  # the kill hit jobs in flight
            jobs = await final_states(client, ids, 240)
        runs: dict[str, list[str]] = {}
        for emu in (emu0, emu1):
            for job_id, prompts in emu.runs_by_job().items():
                runs.setdefault(job_id, []).extend(prompts)
    statuses = [j["status"] for j in jobs]
    assert set(statuses) <= {"succeeded", "failed"}, statuses
    assert statuses.count("succeeded") >= IN_FLIGHT - 5  # failures only if retries ran out
    for job in jobs:
        if job["status"] == "succeeded":
            assert job["outputs"], job
    twice = {job_id: prompts for job_id, prompts in runs.items() if len(prompts) > 1}
    assert twice == {}  # ComfyUI ran no job's workflow twice
    assert set(runs) == set(ids)


async def test_one_of_two_workers_killed_loses_no_job(
    start_server: StartServer, tmp_path: Path, pg_url: str
) -> None:
    outputs = (tmp_path / "shared-outputs").as_uri()
    env = {**FAST, "COMFYRUN_EMULATOR_STEP_TIME_S": "0.01"}
    api = start_server("api", "--db", pg_url, "--outputs", outputs, env=env)
    workers = [
        start_server(
            "worker",
            "--db",
            pg_url,
            "--emulator",
            "2",
            "--outputs",
            outputs,
            "--data-dir",
            str(tmp_path / f"w{i}"),
            env=env,
        )
        for i in range(2)
    ]
    n = max(50, IN_FLIGHT * 2 // 5)
    async with ComfyrunClient(api.url, timeout=60) as client:
        ids = await submit_all(client, n)
        await wait_until(client, lambda s: s["counts"]["succeeded"] >= 10, 120)
        workers[0].kill(signal.SIGKILL)
        jobs = await final_states(client, ids, 240)
        statuses = [j["status"] for j in jobs]
        assert set(statuses) <= {"succeeded", "failed"}, statuses
        assert statuses.count("succeeded") >= n - 5
        done = [j for j in jobs if j["status"] == "succeeded"]
        backends = {j["backend"] for j in done}
        assert len(backends) >= 2  # both workers' backends ran jobs
        # an output written by either worker is served by the API node
        path = await client.download(done[-1]["outputs"][0], tmp_path / "o.png")
        assert path.read_bytes().startswith(b"\x89PNG")
