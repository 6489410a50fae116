"""A job handed to this process's dispatcher as it is enqueued (`Dispatcher.offer`).

When `serve` runs the API and a worker in one process and a backend is idle with nothing
queued, the submission's own transaction claims the new job for that backend
(`JobStore.enqueue_claimed`): the job is durable and running in one commit, and the run starts
without the claim loop's wake-up, claim query and second commit. Anything else — a job waiting,
no idle backend, another process's worker — goes through the queue as before.
"""

from __future__ import annotations

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

    async def taken(self, job: Job | None) -> None:
        """`job`: what `enqueue_claimed` returned for a job it created (None for a replay)."""
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
        try:
            await self._dispatcher.start_claimed(job, slot, self._prompt_id)
        except ComfyrunError as exc:  # the job keeps its lease; when it lapses, it is retried
            log.warning(
                "job %s: starting it failed: %s", job.id, exc, extra={"action": "claim_error"}
            )

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()


__all__ = ["Reservation"]
