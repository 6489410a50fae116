"""`comfyrun serve --comfy PATH` as a subprocess: it runs ComfyUI lazily and leaves nothing
running after it exits (SIGTERM or SIGINT), checked by pid, children included."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.emulator import image_workflow
from tests.support.fake_comfy import pid_running
from tests.support.managed_comfy import make_emulator_folder

pytestmark = pytest.mark.slow


def children_of(pid: int) -> set[int]:
    """Every live process whose parent is `pid`, and everything in those processes' groups."""
    found: set[int] = set()
    stats: list[tuple[int, int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        stats.append((int(entry.name), int(fields[1]), int(fields[2])))
    direct = {p for p, ppid, _ in stats if ppid == pid}
    groups = {pgrp for p, _, pgrp in stats if p in direct}
    found |= direct | {p for p, _, pgrp in stats if pgrp in groups and pgrp != 0}
    return {p for p in found if pid_running(p)}


async def wait_for_line(stream: asyncio.StreamReader, needle: str) -> str:
    async with asyncio.timeout(60):
        while True:
            line = (await stream.readline()).decode()
            assert line, "the server exited before it was listening"
            if needle in line:
                return line.strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_runs_comfyui_lazily_and_leaves_nothing_running(
    tmp_path: Path, sig: signal.Signals
) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    data = tmp_path / "data"
    err = tmp_path / "stderr"
    argv = [sys.executable, "-m", "comfyrun.cli.main", "serve", "--comfy", str(folder)]
    argv += ["--port", "0", "--data-dir", str(data), "--db", f"sqlite:///{data / 'db.sqlite'}"]
    data.mkdir()
    with err.open("wb") as stderr:
        server = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=tmp_path
        )
    try:
        assert server.stdout is not None
        line = await wait_for_line(server.stdout, "listening on")
        url = line.rsplit(" ", 1)[1]
        assert children_of(server.pid) == set()  # lazy: no ComfyUI until a job needs one

        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=90) as http:
            response = await http.post(
                "/api/v2/jobs", params={"wait": 60}, json={"workflow": image_workflow()}
            )
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "succeeded", response.json()
            listed = (await http.get("/api/v2/backends")).json()["backends"]
        assert [b["state"] for b in listed] in (["ready"], ["busy"])
        comfy = children_of(server.pid)
        assert comfy, "ComfyUI should be running as a child of the server"

        cli = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "comfyrun.cli.main", "backends", "--server", url],
            stdout=asyncio.subprocess.PIPE,
        )
        shown = (await asyncio.wait_for(cli.communicate(), 60))[0].decode()
        assert cli.returncode == 0
        assert "ready" in shown and listed[0]["name"] in shown

        server.send_signal(sig)
        async with asyncio.timeout(60):
            assert await server.wait() == 0
        assert not [p for p in comfy if pid_running(p)], "ComfyUI outlived comfyrun"
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
