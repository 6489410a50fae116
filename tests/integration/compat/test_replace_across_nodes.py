"""A finished job replaced on one API node (a ComfyUI prompt_id used again; RunPod's /retry
alike), as another node sharing the PostgreSQL database sees it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from tests.integration.compat.conftest import start_nodes
from tests.support.api import ServerProcess, tiny_workflow
from tests.support.emulator import running_emulator


async def _finished(http: httpx.AsyncClient, url: str, job_id: str) -> dict[str, object]:
    for _ in range(300):
        job = (await http.get(f"{url}/api/v2/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed", "canceled", "expired"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished")


@pytest.mark.slow
async def test_a_job_replaced_on_one_node_is_seen_anew_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    """Node B had read the finished job; node A replaced it: B answered the finished job it
    kept for up to a minute (FINISHED_TTL_S), outputs of the old run and all."""
    async with running_emulator(tmp_path / "backend", step_time_s=0.01) as emu:
        procs: list[ServerProcess] = []
        try:
            nodes = {"a": "api", "b": "api", "w": "worker"}
            await start_nodes(procs, tmp_path, pg_url, emu.url, nodes)
            a, b = procs[0].url, procs[1].url
            async with httpx.AsyncClient(timeout=30) as http:
                body = {"prompt": tiny_workflow(), "prompt_id": "p-1"}
                assert (await http.post(f"{a}/prompt", json=body)).status_code == 200
                first = await _finished(http, b, "p-1")  # B keeps it, finished
                again = {"prompt": tiny_workflow(2), "prompt_id": "p-1"}
                assert (await http.post(f"{a}/prompt", json=again)).status_code == 200
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    seen = (await http.get(f"{b}/api/v2/jobs/p-1")).json()
                    if seen["created_at"] != first["created_at"]:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("node B still answers the replaced job")
        finally:
            for proc in procs:
                proc.kill()
