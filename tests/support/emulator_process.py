"""An emulator in a process of its own (it outlives a comfyrun process a test kills).

with emulator_process(tmp_path / "emu", step_time_s=0.2) as emu:
    ... emu.url ...; emu.history() ...
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx


class EmulatorProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    def history(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/history", params={"max_items": 100_000}, timeout=30)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def runs_by_job(self) -> dict[str, list[str]]:
        """comfyrun job id → the prompts this ComfyUI ran for it (its history, by extra_data)."""
        runs: dict[str, list[str]] = {}
        for prompt_id, entry in self.history().items():
            job_id = entry["prompt"][3].get("comfyrun_job_id")
            if job_id is not None:
                runs.setdefault(job_id, []).append(prompt_id)
        return runs

    def running(self) -> list[str]:
        r = httpx.get(f"{self.url}/queue", timeout=30)
        r.raise_for_status()
        return [item[1] for item in r.json()["queue_running"]]


@contextlib.contextmanager
def emulator_process(
    folder: Path, *, step_time_s: float = 0.0, port: int = 0, extra_args: Sequence[str] = ()
) -> Iterator[EmulatorProcess]:
    """Its output goes to <folder>/emulator.log (a pipe nobody reads would fill and block it)."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "emulator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "comfyrun.comfy.emulator", "--listen", "127.0.0.1",
                "--port", str(port), "--output-directory", str(folder / "output"),
                "--input-directory", str(folder / "input"),
                "--temp-directory", str(folder / "temp"), "--step-time", str(step_time_s),
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and proc.poll() is None and time.monotonic() < deadline:
            for line in log_path.read_text(errors="replace").splitlines():
                if "To see the GUI go to:" in line:
                    url = line.rsplit(" ", 1)[1].strip()
            time.sleep(0.05)  # another process's output: nothing to await
        if url is None:
            raise RuntimeError(f"the emulator did not start: {log_path.read_text()[-2000:]}")
        yield EmulatorProcess(proc, url)
    finally:
        proc.kill()
        proc.wait(timeout=30)
