"""A comfyrun killed with SIGKILL takes its managed ComfyUI with it (Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from tests.support.fake_comfy import make_comfy_folder, pid_running

PARENT = """
import asyncio, sys
from pathlib import Path
from comfyrun.backends.process import ManagedProcess, ManagedSpec

async def main():
    spec = ManagedSpec(name="x", log_dir=Path(sys.argv[2]), comfy_path=Path(sys.argv[1]),
                       python=sys.executable, ready_interval_s=0.05,
                       die_with_parent=sys.argv[3] == "1")
    process = ManagedProcess(spec)
    await process.ensure_started()
    print(process.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def start_parent(tmp_path: Path, tie: bool) -> tuple[asyncio.subprocess.Process, int]:
    folder = make_comfy_folder(tmp_path / "ComfyUI")
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        str(folder),
        str(tmp_path / "logs"),
        "1" if tie else "0",
        stdout=asyncio.subprocess.PIPE,
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 60)
    return parent, int(line)


async def wait_gone(pid: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pid_running(pid) and loop.time() < deadline:  # noqa: ASYNC110 - no event for this
        await asyncio.sleep(0.05)
    return not pid_running(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_comfyui_dies_when_comfyrun_is_killed(tmp_path: Path) -> None:
    parent, child = await start_parent(tmp_path, tie=True)
    assert pid_running(child)
    parent.kill()
    await parent.wait()
    assert await wait_gone(child, 20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_untied_comfyui_outlives_a_killed_comfyrun(tmp_path: Path) -> None:
    """The control: without the tie the child survives, so the test above proves the tie."""
    parent, child = await start_parent(tmp_path, tie=False)
    try:
        parent.kill()
        await parent.wait()
        assert not await wait_gone(child, 1.0)
    finally:
        os.killpg(child, signal.SIGKILL)
