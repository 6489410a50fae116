"""Reconciling by prompt id: a run records the prompt it submits (backend + prompt id) in the
job's event log before it sends it, so that a later attempt (after a worker crash, a lost lease
or a restart) can find that prompt in ComfyUI's queue or history and follow it instead of
running the same workflow twice."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from comfyrun.comfy.history import QueueState
from comfyrun.comfy.result import result_from_history
from comfyrun.core.job import JSON, Job
from comfyrun.store.base import ClaimNote, JobStore

ACTION = "prompt_submitted"


def prompt_note(attempt: int, backend: str, prompt_id: str) -> JSON:
    """The "log" event that says attempt `attempt` submits `prompt_id` to `backend`."""
    return {
        "level": "info",
        "action": ACTION,
        "message": f"submitted to backend {backend} as prompt {prompt_id}",
        "backend": backend,
        "prompt_id": prompt_id,
        "attempt": attempt,
    }


async def note_prompt(store: JobStore, job: Job, backend: str, prompt_id: str) -> None:
    """Record that attempt `job.attempts` submits `prompt_id` to `backend`."""
    await store.append_event(job.id, "log", prompt_note(job.attempts, backend, prompt_id))


def first_attempt_note(backend: str, prompt_id: str) -> ClaimNote:
    """A claim note recording the prompt a job's first attempt is about to submit, in the
    claim's own transaction (a later attempt adopts by prompt id before it notes its own)."""
    return ClaimNote("log", prompt_note(1, backend, prompt_id))


async def previous_prompt(store: JobStore, job_id: str) -> tuple[str, str] | None:
    """(prompt_id, backend) of the last prompt an attempt of this job submitted, if any."""
    with contextlib.suppress(Exception):
        for event in reversed(await store.events_since(job_id)):
            data = event.data
            if event.kind == "log" and data.get("action") == ACTION:
                return str(data.get("prompt_id")), str(data.get("backend"))
    return None


async def still_known(client: Any, prompt_id: str, *, timeout_s: float) -> bool:
    """Whether ComfyUI still has the prompt queued or running, or finished it successfully."""
    try:
        async with asyncio.timeout(timeout_s):
            queue: QueueState = await client.queue()
            if prompt_id in queue:
                return True
            entry = await client.history(prompt_id)
    except Exception:
        return False
    return entry is not None and result_from_history(entry).ok


async def prompt_gone(client: Any, prompt_id: str, *, timeout_s: float) -> bool:
    """ComfyUI has the prompt neither queued, running nor in history (e.g. it was deleted
    from the queue, which reports nothing). False when that cannot be told."""
    try:
        async with asyncio.timeout(timeout_s):
            queue: QueueState = await client.queue()
            if prompt_id in queue:
                return False
            return await client.history(prompt_id) is None
    except Exception:
        return False


async def withdraw_prompt(client: Any, prompt_id: str, *, timeout_s: float) -> bool:
    """Delete a prompt that waits in ComfyUI's queue (`POST /queue {"delete": [...]}` removes
    only pending prompts). True only when ComfyUI then has it neither queued, running nor in its
    history: it never ran and never will. A prompt that already started is left to run."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.delete_queued([prompt_id])
    except Exception:
        return False
    return await prompt_gone(client, prompt_id, timeout_s=timeout_s)


#: How often a prompt being stopped is asked after while it runs on (`stop_prompt`).
GONE_POLL_S = 1.0


async def stop_prompt(
    client: Any,
    prompt_id: str,
    result: asyncio.Future[Any],
    *,
    grace_s: float,
    call_timeout_s: float,
) -> tuple[bool, bool]:
    """Delete the prompt from ComfyUI's queue and interrupt it (whichever applies), then wait up
    to `grace_s` for `result` (the watch's outcome). Returns (settled, gone): whether `result`
    is done, and whether ComfyUI no longer knows the prompt.

    A prompt deleted from the queue never reports anything: whether it is gone is asked at
    once (a prompt held in ComfyUI's queue behind another is canceled in a moment, not at the
    first poll, when the client's reconciler would also have taken it for lost), then every
    `GONE_POLL_S` while it runs on (an interrupted prompt reports its end)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(call_timeout_s):
            await client.delete_queued([prompt_id])
            await client.interrupt(prompt_id)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s):
            while not result.done():
                if await prompt_gone(client, prompt_id, timeout_s=call_timeout_s):
                    return False, True
                await asyncio.wait({result}, timeout=GONE_POLL_S)
    if result.done():
        return True, True
    return False, await prompt_gone(client, prompt_id, timeout_s=call_timeout_s)


__all__ = [
    "GONE_POLL_S",
    "note_prompt",
    "previous_prompt",
    "prompt_gone",
    "still_known",
    "stop_prompt",
    "withdraw_prompt",
]
