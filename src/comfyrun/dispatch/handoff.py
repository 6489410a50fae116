"""A job handed to this process's dispatcher as it is enqueued (`Dispatcher.offer`).

When `serve` runs the API and a worker in one process and a backend is idle with nothing
queued, the submission's own transaction claims the new job for that backend
(`JobStore.enqueue_claimed`): the job is durable and running in one commit, and the run starts
without the claim loop's wake-up, claim query and second commit. Anything else — a job
waiting, no idle backend, another process's worker — goes through the queue as before.

With SQLite the run starts as soon as the transaction has written the job's row, while the
store's thread writes its events and commits (`HandOff.decided`): the prompt is on its way to
ComfyUI during the fsync. The
job is durable before its submission is answered, as any other; a crash within that commit
can leave ComfyUI running a prompt of a job nobody was told of (and no store holds), never a
stored job without its run. A commit that fails withdraws the run and stops its prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from comfyrun.core.job import Job, JobStatus
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import HandOff

if TYPE_CHECKING:
    from comfyrun.backends.pool import Slot
    from comfyrun.dispatch.dispatcher import Dispatcher


log = logging.getLogger(__name__)


class Reservation:
    """An idle backend held for one submission: `taken` starts the job if the store claimed
    it for this reservation, and releases the backend otherwise (`release` on failure)."""

    def __init__(self, dispatcher: Dispatcher, slot: Slot, prompt_id: str, hand_off: HandOff):
        self._dispatcher = dispatcher
        self._slot: Slot | None = slot
        self._prompt_id = prompt_id
        self.hand_off = hand_off
        self._started: str | None = None  # the job id `taken` started

    async def taken(self, job: Job | None) -> None:
        """`job`: what `enqueue_claimed` returned (or, before its commit, decided) for a job it
        created (None for a replay)."""
        slot, self._slot = self._slot, None
        if slot is None:
            return
        claimed = (
            job is not None
            and job.status is JobStatus.RUNNING
            and job.worker_id == self.hand_off.worker_id
            and job.attempts == 1
        )
        if not claimed:
            slot.release()
            return
        assert job is not None
        self._started = job.id
        try:
            await self._dispatcher.start_claimed(job, slot, self._prompt_id)
        except ComfyrunError as exc:  # the job keeps its lease; when it lapses, it is retried
            log.warning(
                "job %s: starting it failed: %s", job.id, exc, extra={"action": "claim_error"}
            )

    async def withdraw(self, taking: asyncio.Task[None]) -> None:
        """The enqueue whose decision `taking` (a `taken` started before the commit) acted on
        failed to commit: the job does not exist. Stop its run, and its prompt if one went
        to ComfyUI."""
        with contextlib.suppress(Exception):
            await taking
        if self._started is not None:
            await self._dispatcher.withdraw_unstored(self._started)
        self.release()

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()


__all__ = ["Reservation"]
