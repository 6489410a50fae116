"""A job's latency on a backend that ends each prompt slowly: ComfyUI started with
--disable-smart-memory unloads every model after a prompt's `execution_success`, before its
history and its `executing` null (on a GPU, seconds). Side by side in one run, on one emulator
run that way (`--unload-s` a model, a text-to-image prompt that loads one checkpoint):

- the emulator driven directly, as ComfyUI's own script examples do: POST /prompt, then the
  socket until `executing` null (what a client of ComfyUI waits for);
- `comfyrun serve` in front of it (a `url` backend): POST /api/v2/jobs?wait, its answer (the
  job ends at `execution_success`, its outputs stored; the backend stays the job's until its
  `executing` null, which each round waits out before the next job);
- the same, GET of the output included.

    .venv/bin/python bench/prompt_end.py [--unload-s 0.5] [--jobs 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench
from hot_path import comfyrun_process, start_emulator, wait_ready
from tests.support.emulator import text_to_image_workflow


async def direct(session: aiohttp.ClientSession, url: str, seed: int) -> float:
    """POST /prompt, then the socket until the prompt's `executing` null: ms."""
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
        start = time.perf_counter()
        body = {"prompt": text_to_image_workflow(seed=seed, steps=2), "client_id": client_id}
        async with session.post(f"{url}/prompt", json=body) as r:
            prompt_id = (await r.json())["prompt_id"]
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["type"] == "executing" and data["data"] == {
                "node": None,
                "prompt_id": prompt_id,
            }:
                return (time.perf_counter() - start) * 1000
    raise RuntimeError("the socket closed")


async def through(session: aiohttp.ClientSession, url: str, seed: int) -> tuple[float, float]:
    """POST /api/v2/jobs?wait, then GET its output: ms to the answer, ms to the output."""
    start = time.perf_counter()
    body = {"workflow": text_to_image_workflow(seed=seed, steps=2)}
    async with session.post(f"{url}/api/v2/jobs", params={"wait": 60}, json=body) as r:
        job = await r.json()
    answered = time.perf_counter()
    assert job["status"] == "succeeded", job
    async with session.get(job["outputs"][0]["url"]) as r:
        assert r.status == 200
        await r.read()
    return (answered - start) * 1000, (time.perf_counter() - start) * 1000


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfyrun-prompt-end-"))
    flags = ["--step-time", "0.01", "--disable-smart-memory", "--unload-s", str(args.unload_s)]
    proc, emu = await start_emulator(tmp, flags=flags)
    config = tmp / "backend.toml"
    config.write_text(f"[[backends]]\nname = 'comfyui'\nurl = '{emu}'\n")
    server = comfyrun_process(tmp, "serve", ["serve", "--config", str(config)])
    rows: dict[str, list[float]] = {"direct": [], "answer": [], "output": []}
    pause = args.unload_s + 0.2  # each job on a backend done with the one before
    try:
        await wait_ready(server.url)
        async with aiohttp.ClientSession() as session:
            for seed in range(2 + args.jobs):  # the first two: warm-up
                ms = await direct(session, emu, seed)
                await asyncio.sleep(pause)
                answer, output = await through(session, server.url, seed + 10_000)
                await asyncio.sleep(pause)
                if seed >= 2:
                    rows["direct"].append(ms)
                    rows["answer"].append(answer)
                    rows["output"].append(output)
    finally:
        server.stop()
        proc.terminate()
        await proc.wait()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"backend with --disable-smart-memory, {args.unload_s:g} s to unload its checkpoint, "
        f"{args.jobs} jobs (median)"
    )
    print(f"  direct: POST /prompt -> executing null          {med['direct']:8.1f} ms")
    print(f"  comfyrun: POST /api/v2/jobs?wait -> its answer   {med['answer']:8.1f} ms")
    print(f"  comfyrun: ... -> its output in hand              {med['output']:8.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unload-s", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=12)
    asyncio.run(main(parser.parse_args()))
