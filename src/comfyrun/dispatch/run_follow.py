"""Following a run's prompt on ComfyUI: its events (progress, previews, the relay to ComfyUI
clients) as they come, and the first of its result, its start, its taking back, a cancel, the
backend going down or the job's timeout. The outcome is taken as ComfyUI tells it, before
ComfyUI has finished the prompt (comfy.socket_events): the backend has room for the next prompt
only once it has (`when_over`). `RunFollowing` is mixed into `JobRun` (dispatch.run), which sets
what it reads.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from comfyrun import stages
from comfyrun.backends.slot import when_over
from comfyrun.comfy import messages as m
from comfyrun.comfy.socket_events import prompt_end
from comfyrun.core.job import JobError
from comfyrun.dispatch.cancel import CancelWatch
from comfyrun.dispatch.progress import ProgressTracker, preview_event
from comfyrun.dispatch.run_end import RunEnding
from comfyrun.dispatch.run_placement import RunPlacement


class RunFollowing(RunPlacement, RunEnding):
    """A run's following of its prompt (JobRun sets these)."""

    taken_back: bool
    _taken_back_now: asyncio.Future[None] | None
    _tracker: ProgressTracker
    _watch: Any

    async def _follow(self, watch: Any) -> None:
        loop = asyncio.get_running_loop()
        # what is waited for: the prompt's result, its start, its taking back, a cancel, the
        # backend going down; all but the prompt's events are futures resolved where they
        # happen (a task each, made and cancelled for every job, cost ~2 % of a job's CPU)
        started: asyncio.Future[None] = loop.create_future()
        take_back = self._taken_back_now = loop.create_future()
        if self.taken_back:
            take_back.set_result(None)
        result = watch.settled()
        cancel_watch = CancelWatch(self.ctx.store, self.job.id, self.ctx.settings)
        helpers: dict[str, asyncio.Future[Any]] = {
            "events": asyncio.ensure_future(self._consume(watch, started)),
            "cancel": cancel_watch.requested,
            "down": self.backend.down_future(),
            "start": started,
            "take_back": take_back,
        }
        limit = self.job.timeout_s or self.ctx.settings.default_timeout_s
        # counted from the prompt's start; until it starts (it may wait behind the job before
        # it in ComfyUI's queue, itself bounded by its own timeout) a looser cap applies, so a
        # prompt whose events never come (no websocket) still ends
        deadline: float | None = loop.time() + 2 * limit if limit else None
        try:
            waiting: set[asyncio.Future[Any]] = {
                result,
                helpers["cancel"],
                helpers["down"],
                helpers["start"],
                helpers["take_back"],
            }
            while True:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if result in done:
                    stages.mark(self.job.id, "executed")
                    # nothing listens for a cancel from here on (the end's write takes a job
                    # made `canceling` meanwhile as such): the watch goes before the end is
                    # written, so the end's own notification does not wake it to read the log
                    cancel_watch.close()
                    self._take_the_rest()
                    ended = time.time()
                    outcome = await self._result_of(result)
                    began = self._started_at  # (its first event, when one came)
                    run_s = None if began is None else ended - began
                    over = prompt_end(self.client, self.prompt_id)
                    when_over(over, functools.partial(self.slot.executed_prompt, run_s))
                    await self._note_started(outcome)
                    await self._on_result(outcome)
                    return
                if helpers["take_back"] in done and result not in done:
                    return  # deleted from ComfyUI's queue unstarted: the job runs elsewhere
                if helpers["start"] in done:
                    stages.mark(self.job.id, "started")
                    waiting.discard(helpers["start"])
                    await self._note_started(None)
                    if limit:
                        deadline = loop.time() + limit
                    continue
                if helpers["cancel"] in done:
                    await self._on_cancel(result)
                    return
                if helpers["down"] in done:
                    cut = self.backend.cut_jobs.pop(self.job.id, None)
                    if cut is not None:  # an admin's forced stop/restart: not the job's fault
                        error = JobError(
                            code="backend_lost", message=f"backend {self.backend.name}: {cut}"
                        )
                        await self._requeue_uncounted(error, cut)
                        return
                    await self._backend_lost(self.backend.last_error or "backend is down")
                    return
                if not done:
                    await self._on_timeout(result, limit or 0.0)
                    return
        finally:
            cancel_watch.close()
            tasks = (*helpers.values(), result)
            if cancel_watch.task is not None:
                tasks += (cancel_watch.task,)
            for task in tasks:
                task.cancel()
            # bounded: a helper blocked in a store call that swallows cancellation must not keep
            # the job (and its slot) from finishing
            await asyncio.wait(tasks, timeout=0.5)

    # --- progress ---------------------------------------------------------------------------
    async def _consume(self, watch: Any, started: asyncio.Future[None]) -> None:
        async for message in watch:
            self._on_message(message, started)

    def _take_the_rest(self) -> None:
        """Handle the messages the prompt's events task has not taken yet (the prompt's end
        may settle its result before that task runs again)."""
        if self._watch is not None:
            for message in self._watch.drain():
                self._on_message(message, None)

    def _on_message(self, message: Any, started: asyncio.Future[None] | None) -> None:
        starts = m.ExecutionStart | m.ExecutionCached | m.Executing | m.Progress
        if isinstance(message, starts) and self._started_at is None:
            self._started_at = time.time()
        if started is not None and not started.done() and isinstance(message, starts):
            started.set_result(None)
        self._relay.feed(message)
        snapshot = self._tracker.feed(message)
        if snapshot is not None:
            self._progress.progress(snapshot)
        if isinstance(message, m.PreviewImageWithMetadata | m.PreviewImage):
            self._progress.preview(preview_event(message))


__all__ = ["RunFollowing"]
