"""Where a run's prompt is, as its job records it: held in ComfyUI's queue, or started (its
first event here, else the execution_start of its history), with the backend and prompt named
on the job. A write waits a moment to see whether it is needed (most jobs start at once, and a
short one records its start with its end). `RunPlacement` is mixed into `JobRun`
(dispatch.run), which sets what it reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from comfyrun.backends.pool import Backend, Slot
from comfyrun.comfy import messages as m
from comfyrun.comfy.result import PromptResult
from comfyrun.core.job import Job
from comfyrun.dispatch.run_context import RunContext
from comfyrun.dispatch.run_end import drop_unwritten
from comfyrun.errors import ComfyrunError

log = logging.getLogger("comfyrun.dispatch.run")


class RunPlacement:
    """The recording of a run's prompt's placement and start (JobRun sets these)."""

    ctx: RunContext
    job: Job
    slot: Slot
    backend: Backend
    client: Any
    prompt_id: str | None
    settled: bool
    _started_at: float | None
    _start_recorded: bool
    _start_unwritten: float | None
    _placement_notes: set[asyncio.TimerHandle | asyncio.Task[None]]

    async def _adopted_state(self, prompt_id: str) -> None:
        """A prompt of an earlier attempt that still waits in ComfyUI's queue is held here (it
        may be taken back); one that already started counts as started now (its first events
        went to the earlier attempt)."""
        try:
            async with asyncio.timeout(self.ctx.settings.submit_timeout_s):
                queue = await self.client.queue()
        except Exception:
            return
        if prompt_id in queue.running:
            self._started_at = time.time()
            await self._note_started(None)
        elif prompt_id in queue.pending and self.backend is self.slot.backend:
            self.slot.hold(True)
            await self._record_placement(None)

    async def _note_started(self, outcome: PromptResult | BaseException | None) -> None:
        """Record once when ComfyUI started the prompt: its first event here, else the
        execution_start of its history (a result that came without events)."""
        if self._start_recorded:
            return
        at = self._started_at
        if at is None and isinstance(outcome, PromptResult):
            at = next(
                (
                    msg.timestamp / 1000
                    for msg in outcome.messages
                    if isinstance(msg, m.ExecutionStart) and msg.timestamp
                ),
                None,
            )
        if at is None:
            return
        self._start_recorded = True
        self.slot.hold(False)
        self._start_unwritten = at
        self._note_later(at)

    def _note_later(self, started_at: float | None) -> None:
        """Record the placement (held: None; started: when) only if it still matters a moment
        later: a prompt submitted to an idle ComfyUI starts within milliseconds (no "held"
        write), and a short job records its start with its end (`_transition`). A longer wait
        or job gets the write, so the API shows it held, then started, within that moment."""
        # a start supersedes the held note not yet due; one being written is let finish, and
        # the next is written after it, so the start is not overwritten
        writing = drop_unwritten(self._placement_notes)
        later = asyncio.get_running_loop().call_later(
            self.ctx.settings.placement_note_after_s, self._note_due, started_at, writing
        )  # a timer, not a task: most jobs never need the write
        self._placement_notes = {later, *writing}

    def _note_due(self, started_at: float | None, after: list[asyncio.Task[None]]) -> None:
        if self.settled or (started_at is None and self._start_recorded):
            return
        self._placement_notes = {asyncio.ensure_future(self._note_now(started_at, after))}

    async def _note_now(self, started_at: float | None, after: list[asyncio.Task[None]]) -> None:
        if after:  # the note before this one, still being written
            await asyncio.wait(after)
        await self._record_placement(started_at)
        if started_at is not None:
            self._start_unwritten = None

    async def _record_placement(self, started_at: float | None) -> None:
        """Name the backend and prompt on the job, and when ComfyUI started the prompt (None:
        it waits in ComfyUI's queue, and the job shows `queued`)."""
        if self.prompt_id is None:
            return
        try:
            await self.ctx.store.record_placement(
                self.job.id,
                self.ctx.worker_id,
                backend=self.backend.name,
                prompt_id=self.prompt_id,
                execution_started_at=started_at,
            )
        except ComfyrunError as exc:  # the run goes on; only what the API shows lags
            log.warning("job %s: recording its placement failed: %s", self.job.id, exc)


__all__ = ["RunPlacement"]
