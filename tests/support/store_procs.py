"""Start and read `tests.support.store_worker` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProc:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        """Every complete JSON line written so far (a SIGKILL may cut the last one)."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.lines = out
        return out

    def go(self) -> None:
        """Release a worker started with --go."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def busy(self) -> bool:
        """Whether the worker holds a job now (its last outcome line is a claim)."""
        outcomes = [line for line in self.read() if "ready" not in line]
        return bool(outcomes) and "claimed" in outcomes[-1]

    def ready(self) -> bool:
        return any("ready" in line for line in self.read())


def spawn_worker(url: str, worker_id: str, folder: Path, *args: str) -> WorkerProc:
    log = folder / f"{worker_id}.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.store_worker", url, worker_id, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE if "--go" in args else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProc(worker_id, proc, log)


def wait_ready(workers: list[WorkerProc], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(w.ready() for w in workers):
        for w in workers:
            if w.proc.poll() is not None and not w.ready():
                raise RuntimeError(f"{w.worker_id} exited early:\n{w.log.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not start")
        time.sleep(0.05)


__all__ = ["WorkerProc", "spawn_worker", "wait_ready"]
