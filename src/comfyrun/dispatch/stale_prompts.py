"""Prompts left on a backend comfyrun gave up on, cleared when it comes back.

A backend found down (it froze, its network parted, an admin cut its jobs short) may still hold
comfyrun's prompts: its jobs went back to the queue and may have run elsewhere since. A ComfyUI
that resumes would run them anyway, the GPU's work thrown away, a prompt with side effects run
twice. So before the pool takes such a backend back (BackendPool.on_return), its queue is read
and every prompt of comfyrun's whose job is no longer there is stopped: deleted while it waits,
interrupted (by its prompt id: nothing else) while it runs.

comfyrun's prompts carry their job's id in `extra_data` (`JOB_ID_KEY`, see run.backend_extra_data);
any other prompt (a person's, from the ComfyUI editor on that machine) is left alone. A prompt is
stale when its job ended, or when a later attempt noted another prompt (dispatch.reconcile notes
each prompt before it is sent): the job moved on. A job whose last noted prompt is this one is
still this backend's (running here, or waiting to adopt it back): left alone; so is a job the
store does not know (another deployment's, or one it cannot read now).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comfyrun.backends.backend import Backend
from comfyrun.comfy.history import QueueItem, QueueState
from comfyrun.core.job import Job
from comfyrun.dispatch.reconcile import previous_prompt
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

#: The `extra_data` key naming the job a prompt of comfyrun's runs.
JOB_ID_KEY = "comfyrun_job_id"


def job_id_of(item: QueueItem) -> str | None:
    """The comfyrun job `item` runs, None for a prompt comfyrun did not submit."""
    job_id = item.extra_data.get(JOB_ID_KEY)
    return job_id if isinstance(job_id, str) and job_id else None


def is_stale(job: Job | None, prompt_id: str, last_noted: str | None) -> bool:
    """Whether `prompt_id`, found on a backend comfyrun gave up on, is no longer its job's: the
    job ended, or its last noted prompt (`last_noted`) is another one. An unknown job is not
    judged (False)."""
    if job is None:
        return False
    if job.terminal:
        return True
    return last_noted is not None and last_noted != prompt_id


@dataclass(frozen=True, slots=True)
class StalePrompts:
    """The prompts of a backend's queue whose jobs moved on: to interrupt and to delete."""

    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.running or self.pending)

    def describe(self) -> str:
        parts = [f"{i.prompt_id} (job {job_id_of(i)}, running)" for i in self.running]
        parts += [f"{i.prompt_id} (job {job_id_of(i)}, queued)" for i in self.pending]
        return ", ".join(parts)


async def find_stale(store: JobStore, queue: QueueState) -> StalePrompts:
    """The prompts in `queue` (GET /queue) whose jobs are no longer its backend's."""

    async def stale(items: Sequence[QueueItem]) -> tuple[QueueItem, ...]:
        found = []
        for item in items:
            job_id = job_id_of(item)
            if job_id is None:
                continue
            try:
                job = await store.get(job_id)
            except ComfyrunError as exc:  # cannot tell: left to run
                log.warning(
                    "stale prompt %s: reading job %s failed: %s", item.prompt_id, job_id, exc
                )
                continue
            noted = await previous_prompt(store, job_id) if job is not None else None
            if is_stale(job, item.prompt_id, None if noted is None else noted[0]):
                found.append(item)
        return tuple(found)

    return StalePrompts(
        running=await stale(queue.running_items), pending=await stale(queue.pending_items)
    )


async def clear_stale_prompts(
    client: Any, store: JobStore, backend: str, *, timeout_s: float
) -> StalePrompts:
    """Delete from the backend's ComfyUI queue, and interrupt, the prompts whose jobs moved on
    (`find_stale`); returns them. Each call to ComfyUI is bounded by `timeout_s`; a failing one
    raises (the backend is not back yet)."""
    async with asyncio.timeout(timeout_s):
        queue: QueueState = await client.queue()
    found = await find_stale(store, queue)
    if not found:
        return found
    if found.pending:
        async with asyncio.timeout(timeout_s):
            await client.delete_queued([i.prompt_id for i in found.pending])
    for item in found.running:
        # by prompt id: ComfyUI interrupts it only if it still runs (never the next one)
        async with asyncio.timeout(timeout_s):
            await client.interrupt(item.prompt_id)
    log.warning(
        "backend %s came back with prompts of jobs that moved on: stopped %s",
        backend,
        found.describe(),
        extra={
            "action": "stale_prompts_cleared",
            "backend": backend,
            "prompt_ids": [i.prompt_id for i in (*found.running, *found.pending)],
        },
    )
    return found


class ReturnCheck:
    """The pool's `on_return` (BackendPool.on_return): a backend comes back only once what it
    holds of jobs that moved on is cleared. True: cleared (or nothing to clear); False: ComfyUI
    did not answer (it is probed again). Counts the prompts stopped on the backend
    (`Backend.stale_prompts_stopped`, a metric)."""

    def __init__(self, store: JobStore, *, timeout_s: float) -> None:
        self.store = store
        self.timeout_s = timeout_s

    async def __call__(self, backend: Backend, client: Any) -> bool:
        try:
            found = await clear_stale_prompts(
                client, self.store, backend.name, timeout_s=self.timeout_s
            )
        except Exception as exc:  # TimeoutError, a ComfyUI or store error: not back yet
            log.warning(
                "backend %s answers again, but clearing its prompts of jobs that moved on "
                "failed: %r",
                backend.name,
                exc,
                extra={"action": "stale_prompts_failed", "backend": backend.name},
            )
            return False
        backend.stale_prompts_stopped += len(found.running) + len(found.pending)
        return True


__all__ = [
    "JOB_ID_KEY",
    "ReturnCheck",
    "StalePrompts",
    "clear_stale_prompts",
    "find_stale",
    "is_stale",
    "job_id_of",
]
