"""`comfyrun …` with the per-job stage marks (comfyrun.stages) written as JSON lines to the file
named by $COMFYRUN_BENCH_STAGES, and each of the garbage collector's pauses ("generation ms")
to the one named by $COMFYRUN_BENCH_GC. Used by bench/hot_path.py; not part of comfyrun.

The marks cost the server a log record each (~12 a job), so they are made only while switched
on: SIGUSR1 switches them on, SIGUSR2 off (the state the server starts in), and the bench times
the jobs users would see, and the throughput, with them off; the handler runs at the next
request. They are kept in memory while on and written to the file as they go off."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time
from typing import Any

from comfyrun.cli.main import app


class JsonLines(logging.Handler):
    """The marks, kept in memory while they are on and written out when they go off: a write
    per mark would release the GIL at each one (a system call), which changes when the
    server's other threads (the store's commits) get to run, the very thing timed."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.kept: list[tuple[Any, Any, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(tuple(getattr(record, k, None) for k in ("job_id", "stage", "t")))

    def write_out(self) -> None:
        kept, self.kept = self.kept, []
        with open(self.path, "a") as file:
            for job_id, stage, t in kept:
                file.write(json.dumps({"job": job_id, "stage": stage, "t": t}) + "\n")


def log_gc_pauses(path: str) -> None:
    file = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    started = [0.0]

    def pause(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            file.write(f"{info['generation']} {(time.perf_counter() - started[0]) * 1000:.3f}\n")

    gc.callbacks.append(pause)


if __name__ == "__main__":
    if os.environ.get("COMFYRUN_BENCH_GC"):
        log_gc_pauses(os.environ["COMFYRUN_BENCH_GC"])
    if os.environ.get("COMFYRUN_BENCH_STAGES"):
        stages = logging.getLogger("comfyrun.stages")
        stages.setLevel(logging.WARNING)  # off until SIGUSR1
        stages.propagate = False
        lines = JsonLines(os.environ["COMFYRUN_BENCH_STAGES"])
        stages.addHandler(lines)

        def switch_off(*_: Any) -> None:
            stages.setLevel(logging.WARNING)
            lines.write_out()

        signal.signal(signal.SIGUSR1, lambda *_: stages.setLevel(logging.DEBUG))
        signal.signal(signal.SIGUSR2, switch_off)
    app(prog_name="comfyrun")
