"""How long a managed ComfyUI takes to start (spawn → answering /system_stats) and to stop
(SIGTERM to the process group → gone), with the emulator's ComfyUI-shaped folder standing in for
a real ComfyUI checkout. Run from the repo root:

    .venv/bin/python bench/managed_process.py [RUNS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from comfyrun.backends.process import ManagedProcess, ManagedSpec
from comfyrun.comfy.emulator.folder import make_comfy_folder


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_comfy_folder(root / "ComfyUI")
        spec = ManagedSpec(name="bench", comfy_path=folder, log_dir=root / "logs", stop_grace_s=5)
        starts: list[float] = []
        stops: list[float] = []
        for _ in range(runs):
            proc = ManagedProcess(spec)
            t0 = time.perf_counter()
            await proc.ensure_started()
            starts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await proc.stop()
            stops.append(time.perf_counter() - t0)
    for name, xs in (("start → ready", starts), ("stop", stops)):
        print(
            f"{name:14s} median {statistics.median(xs) * 1000:7.0f} ms"
            f"   min {min(xs) * 1000:6.0f} ms   max {max(xs) * 1000:6.0f} ms   (n={len(xs)})"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
