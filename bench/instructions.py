"""Instructions a job: comfyrun beside ComfyUI (the emulator), counted by valgrind, in one run.

    .venv/bin/python bench/instructions.py [--jobs 200]

CPU time on these shared two-core machines moves with whatever else runs (the same build's
CPU a job differs by 10 % and more between runs of hot_path.py); the instructions a process
executes for the same jobs hardly do (about 1 %). Each process below runs under valgrind's
callgrind with counting off; counting is switched on (callgrind_control) for `--jobs` jobs run
one at a time after a warm-up, then off, and the count is read from callgrind's dump:

- the emulator driven directly, through the ComfyUI face's steps (POST /prompt, /ws until the
  prompt is done, GET /history/{id}, GET /view): what ComfyUI itself executes for a job;
- `comfyrun serve` (its one backend an emulator, not counted): a v2 job (POST ?wait, then GET
  the output) and a ComfyUI-face job (the same steps as the direct ones): what comfyrun
  executes for each, its own threads included.

Prints the instructions a job and comfyrun's as a multiple of the emulator's. A change that
makes the hot path cheaper or dearer by a few per cent shows here where hot_path.py's CPU
figures cannot tell it from the machine's noise. Needs valgrind (Debian's package) and
callgrind_control on PATH; comfyrun runs about 30x slower under it, so timeouts and the
moments timers fire differ from a normal run (the same for every build compared).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hot_path import comfy_face_run, comfyrun_process, start_emulator, v2_run, wait_ready

WARM_UP_JOBS = 10


def callgrind(out: Path) -> list[str]:
    """valgrind's command line for a process counted only while switched on."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
    ]


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def instructions(dump: Path) -> int | None:
    """The instructions a callgrind dump counted (its `totals:` line); None until written."""
    if not dump.exists():
        return None
    found = re.search(r"^totals:\s+(\d+)", dump.read_text(errors="replace"), re.M)
    return int(found.group(1)) if found is not None else None


async def counted(
    pid: int, out: Path, dump: int, jobs: int, one: Callable[[], Awaitable[Any]]
) -> float:
    """Instructions a job of `one`, run `jobs` times while `pid` counts (its `dump`th dump)."""
    for _ in range(WARM_UP_JOBS):
        await one()
    await asyncio.to_thread(control, pid, "-i", "on")
    for _ in range(jobs):
        await one()
    await asyncio.to_thread(control, pid, "-i", "off")
    await asyncio.to_thread(control, pid, "-d")
    path = Path(f"{out}.{dump}")
    for _ in range(100):  # the dump is written by the process itself, as it gets to it
        total = await asyncio.to_thread(instructions, path)
        if total is not None:
            return total / jobs
        await asyncio.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump {path}")


async def main(args: argparse.Namespace) -> None:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install valgrind)")
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-instructions-"))
    rows: list[tuple[str, float]] = []
    async with httpx.AsyncClient(timeout=600) as http:
        out = tmp / "emulator.cg"
        proc, url = await start_emulator(tmp, runner=callgrind(out))
        try:
            direct = await counted(proc.pid, out, 1, args.jobs, lambda: comfy_face_run(http, url))
        finally:
            proc.terminate()
            await proc.wait()
        out = tmp / "serve.cg"
        server = comfyrun_process(tmp, "serve", ["serve", "--emulator", "1"], runner=callgrind(out))
        try:
            await wait_ready(server.url)
            pid = server.proc.pid
            v2 = await counted(pid, out, 1, args.jobs, lambda: v2_run(http, server.url, {}))
            face = await counted(pid, out, 2, args.jobs, lambda: comfy_face_run(http, server.url))
        finally:
            server.stop()
    rows = [
        ("the emulator driven directly, the face's steps", direct),
        ("comfyrun serve, v2: POST ?wait + GET output", v2),
        ("comfyrun serve, ComfyUI face", face),
    ]
    print(f"instructions a job, {args.jobs} jobs one at a time (valgrind callgrind)")
    for label, value in rows:
        multiple = "" if value is direct else f"  ({value / direct:.2f}x the emulator's)"
        print(f"  {label:<50} {value / 1e6:7.2f} M{multiple}")
    if args.keep:
        print(f"callgrind's dumps (callgrind_annotate FILE): {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs counted per column")
    parser.add_argument(
        "--keep", action="store_true", help="keep callgrind's dumps (per function) and say where"
    )
    asyncio.run(main(parser.parse_args()))
