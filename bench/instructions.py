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

Then the parts of a face job, each counted alone on both servers (`--part-jobs` times): a
/ws opened, greeted and closed, a GET /history/{id} and a GET /view of a finished prompt (and,
for comfyrun, the GET of a v2 output): what every request costs whatever the job, beside the
emulator's own. Last, a submission alone (POST /api/v2/jobs, no wait) to a `comfyrun api` node
(no worker: the jobs stay queued), one at a time: what an enqueue executes (the enqueues/s of
hot_path.py are its CPU on one core).

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
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hot_path import (
    comfy_face_run,
    comfyrun_process,
    start_emulator,
    v2_run,
    wait_ready,
    workflow,
)

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


Part = Callable[[], Awaitable[Any]]


async def face_parts(http: httpx.AsyncClient, url: str) -> dict[str, Part]:
    """The requests of a face job each alone, on a prompt run to its end first."""
    answer = await http.post(f"{url}/prompt", json={"prompt": workflow(), "client_id": "parts"})
    prompt_id = answer.raise_for_status().json()["prompt_id"]
    for _ in range(600):
        history = (await http.get(f"{url}/history/{prompt_id}")).json()
        if prompt_id in history:
            break
        await asyncio.sleep(0.1)
    image = history[prompt_id]["outputs"]["2"]["images"][0]
    ws_url = url.replace("http://", "ws://") + "/ws?clientId="

    async def socket() -> None:
        async with websockets.connect(ws_url + uuid.uuid4().hex, max_size=None) as ws:
            await ws.recv()  # the greeting (status)

    async def history_read() -> None:
        (await http.get(f"{url}/history/{prompt_id}")).raise_for_status()

    async def view() -> None:
        (await http.get(f"{url}/view", params=image)).raise_for_status()

    return {
        "/ws opened, greeted, closed": socket,
        "GET /history/{id}": history_read,
        "GET /view": view,
    }


async def counted_parts(
    pid: int, out: Path, first_dump: int, jobs: int, parts: dict[str, Part]
) -> dict[str, float]:
    found = {}
    for i, (name, one) in enumerate(parts.items()):
        found[name] = await counted(pid, out, first_dump + i, jobs, one)
    return found


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
            parts = await face_parts(http, url)
            direct_parts = await counted_parts(proc.pid, out, 2, args.part_jobs, parts)
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
            parts = await face_parts(http, server.url)
            answer = await http.post(
                f"{server.url}/api/v2/jobs", params={"wait": 60}, json={"workflow": workflow()}
            )
            output_url = answer.raise_for_status().json()["outputs"][0]["url"]

            async def v2_output() -> None:
                (await http.get(output_url)).raise_for_status()

            parts["GET a v2 output"] = v2_output
            served_parts = await counted_parts(pid, out, 3, args.part_jobs, parts)
        finally:
            server.stop()
        out = tmp / "api.cg"
        server = comfyrun_process(tmp, "api", ["api"], runner=callgrind(out))
        try:
            await wait_ready(server.url)

            async def submit() -> None:
                answer = await http.post(f"{server.url}/api/v2/jobs", json={"workflow": workflow()})
                assert answer.status_code == 201, answer.text

            enqueue = await counted(server.proc.pid, out, 1, args.jobs, submit)
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
    print(f"the parts of a job, each alone ({args.part_jobs} times): comfyrun / the emulator")
    for label, value in served_parts.items():
        theirs = direct_parts.get(label)
        ratio = f"{value / 1e6:7.2f} / {theirs / 1e6:5.2f} M" if theirs else f"{value / 1e6:7.2f} M"
        print(f"  {label:<50} {ratio}")
    print(f"  {'a submission, POST /api/v2/jobs (an api node)':<50} {enqueue / 1e6:7.2f} M")
    if args.keep:
        print(f"callgrind's dumps (callgrind_annotate FILE): {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs counted per column")
    parser.add_argument("--part-jobs", type=int, default=30, help="times each part is counted")
    parser.add_argument(
        "--keep", action="store_true", help="keep callgrind's dumps (per function) and say where"
    )
    asyncio.run(main(parser.parse_args()))
