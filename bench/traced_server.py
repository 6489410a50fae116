"""`comfyrun …` with the per-job stage marks (comfyrun.stages) written as JSON lines to the file
named by $COMFYRUN_BENCH_STAGES. Used by bench/hot_path.py; not part of comfyrun."""

from __future__ import annotations

import json
import logging
import os

from comfyrun.cli.main import app


class JsonLines(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)

    def emit(self, record: logging.LogRecord) -> None:
        job_id, stage, t = (getattr(record, k, None) for k in ("job_id", "stage", "t"))
        self.file.write(json.dumps({"job": job_id, "stage": stage, "t": t}) + "\n")


if __name__ == "__main__":
    if os.environ.get("COMFYRUN_BENCH_STAGES"):
        stages = logging.getLogger("comfyrun.stages")
        stages.setLevel(logging.DEBUG)
        stages.propagate = False
        stages.addHandler(JsonLines(os.environ["COMFYRUN_BENCH_STAGES"]))
    app(prog_name="comfyrun")
