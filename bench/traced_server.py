"""`comfyrun …` with the per-job stage marks (comfyrun.stages) written as JSON lines to the file
named by $COMFYRUN_BENCH_STAGES, and each of the garbage collector's pauses ("generation ms")
to the one named by $COMFYRUN_BENCH_GC. Used by bench/hot_path.py; not part of comfyrun.

The marks cost the server a log record each (~12 a job, a write each: ~0.5 ms of CPU a job
here, ~10 % of a face job's), so they are written only while switched on: SIGUSR1 switches
them on, SIGUSR2 off (the state the server starts in), and the bench times the jobs users
would see, and the throughput, with them off; the handler runs at the next request."""

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
    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)

    def emit(self, record: logging.LogRecord) -> None:
        job_id, stage, t = (getattr(record, k, None) for k in ("job_id", "stage", "t"))
        self.file.write(json.dumps({"job": job_id, "stage": stage, "t": t}) + "\n")


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
        stages.addHandler(JsonLines(os.environ["COMFYRUN_BENCH_STAGES"]))
        signal.signal(signal.SIGUSR1, lambda *_: stages.setLevel(logging.DEBUG))
        signal.signal(signal.SIGUSR2, lambda *_: stages.setLevel(logging.WARNING))
    app(prog_name="comfyrun")
