"""A comfyrun process killed -9 and started again takes its in-flight jobs back at once (not at
lease expiry), follows the prompts ComfyUI is still running by prompt id, and ComfyUI runs each
prompt once: `serve` on SQLite, and a `worker` on PostgreSQL. The backends are emulators in
processes of their own, so they outlive the comfyrun process that is killed."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import StartServer
from tests.support.emulator import text_to_image_workflow
from tests.support.emulator_process import EmulatorProcess, emulator_process

from comfyrun.client import ComfyrunClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: The default lease: a job that came back only at its expiry would take this long.
LEASE_S = 30
#: How soon after the restarted process answers the job must be running again.
RESUME_S = 2.0


async def until(predicate: Any, timeout: float, what: str) -> None:
    """Poll another process's state (nothing there to await)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def kill_restart_and_check(start: Any, first: Any, emu: EmulatorProcess, url_of: Any) -> None:
    """Submit a ~4 s job, kill `first` while ComfyUI runs it, start the replacement and check
    that the job is running again within RESUME_S and ends with one run on ComfyUI."""
    async with ComfyrunClient(url_of(first), timeout=60) as client:
        job = await client.submit(text_to_image_workflow(seed=7, steps=20), timeout_s=120)
        job_id = job["id"]

        async def started() -> bool:
            return bool(emu.running())

        await until(started, 60, "ComfyUI to start the prompt")
    first.kill(signal.SIGKILL)
    assert emu.running()  # still running on ComfyUI, its job held by a dead process

    second = start()
    ready = time.monotonic()
    async with ComfyrunClient(url_of(second), timeout=60) as client:

        async def resumed() -> bool:
            j = await client.get(job_id)
            return bool(j["status"] == "running" and j["attempts"] == 2) or j["status"] in (
                "succeeded",
                "failed",
            )

        await until(resumed, LEASE_S, "the job to be taken back")
        assert time.monotonic() - ready <= RESUME_S
        done = await client.wait(job_id, timeout=120)
    assert done["status"] == "succeeded", done
    assert done["outputs"]
    runs = emu.runs_by_job()
    assert list(runs) == [job_id] and len(runs[job_id]) == 1, runs  # ComfyUI ran it once


async def test_a_restarted_serve_resumes_its_jobs_at_once(
    start_server: StartServer, tmp_path: Path
) -> None:
    with emulator_process(tmp_path / "emu", step_time_s=0.2) as emu:
        args = ("--backend", emu.url, "--db", f"sqlite:///{tmp_path / 'q.db'}")

        def start() -> Any:
            return start_server("serve", *args, "--data-dir", str(tmp_path / "data"))

        await kill_restart_and_check(start, start(), emu, lambda p: p.url)


async def test_a_restarted_worker_resumes_its_jobs_at_once(
    start_server: StartServer, tmp_path: Path, pg_url: str
) -> None:
    outputs = (tmp_path / "outputs").as_uri()
    api = start_server("api", "--db", pg_url, "--outputs", outputs)
    with emulator_process(tmp_path / "emu", step_time_s=0.2) as emu:
        args = ("--db", pg_url, "--backend", emu.url, "--outputs", outputs)

        def start() -> Any:
            return start_server("worker", *args, "--data-dir", str(tmp_path / "w"))

        await kill_restart_and_check(start, start(), emu, lambda _: api.url)


def test_two_processes_in_one_data_dir_get_different_worker_ids(tmp_path: Path) -> None:
    from comfyrun.dispatch.identity import WorkerIdentity

    first = WorkerIdentity.claim(tmp_path)
    second = WorkerIdentity.claim(tmp_path)
    try:
        assert first.worker_id != second.worker_id
        assert first.worker_id.rsplit(":", 1)[0] == second.worker_id.rsplit(":", 1)[0]
    finally:
        second.release()
    again = WorkerIdentity.claim(tmp_path)  # a restart gets the slot that was given up
    try:
        assert again.worker_id == second.worker_id
    finally:
        again.release()
        first.release()
