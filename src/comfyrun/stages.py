"""Per-job stage marks for the hot path's budget (bench/hot_path.py).

`mark(job_id, stage)` logs one DEBUG record on the `comfyrun.stages` logger with a monotonic
timestamp (`time.perf_counter()`), and costs one level check when that logger is off (always,
unless a bench or a debugging session turns it on). The stages of one job, in order:

received (the API has the request) → validated → enqueued (committed) → claimed → sending (the
run sends POST /prompt to ComfyUI) → submitted (ComfyUI accepted the prompt) → started (ComfyUI's execution_start) → executed (ComfyUI's
execution_success) → collected (outputs read and stored) → committed (final state) → notified
(the waiting request woke) → responded (the response is rendered).

A job handed off as it is enqueued (dispatch.handoff) is `decided` (claimed in the enqueue's
transaction, not yet committed) after `validated`; its `enqueued` (the commit) then overlaps
its `claimed` and `submitted`.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("comfyrun.stages")

STAGES = (
    "received",
    "validated",
    "enqueued",
    "decided",
    "claimed",
    "sending",
    "submitted",
    "started",
    "executed",
    "collected",
    "committed",
    "notified",
    "responded",
)


def mark(job_id: str, stage: str) -> None:
    """`job_id` reached `stage` now."""
    if log.isEnabledFor(logging.DEBUG):
        mark_at(job_id, stage, time.perf_counter())


def mark_at(job_id: str, stage: str, t: float) -> None:
    """`job_id` reached `stage` at `t` (a `time.perf_counter()` value taken before the job
    had its id)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s",
            job_id,
            stage,
            extra={"action": "stage", "job_id": job_id, "stage": stage, "t": t},
        )


__all__ = ["STAGES", "mark", "mark_at"]
