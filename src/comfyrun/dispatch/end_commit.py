"""A run's end written to the store (`EndCommit`, mixed into `RunEnding`, dispatch.run_end):
one transition from the status the run last saw, read again when the job moved meanwhile (the
API made it `canceling`); through a store failing a moment (a PostgreSQL connection dropped,
SQLite locked by another process), written again or found written, so that the run's outcome
stands: a failed write used to fail the run and send the job back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any

from comfyrun import stages
from comfyrun.backends.pool import Backend
from comfyrun.core.job import ACTIVE, Job
from comfyrun.core.state import Event
from comfyrun.dispatch.relay import JobRelay
from comfyrun.dispatch.run_context import RunContext
from comfyrun.errors import Conflict, IllegalTransition, StoreError
from comfyrun.store.base import Changes

log = logging.getLogger("comfyrun.dispatch.run")

#: The waits before the run's end is written again after the store failed (then it gives up).
END_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)


async def store_failed(exc: StoreError, failures: int, job_id: str, extra: dict[str, Any]) -> int:
    """The store failed writing (or reading) a run's end, the `failures`-th time: wait and let
    the caller try again, a few times (a PostgreSQL connection dropped, SQLite locked a
    moment); then `exc` goes up (the run failed: the job's next attempt adopts its prompt by
    id). The failures so far, this one counted."""
    if failures >= len(END_RETRY_DELAYS_S):
        raise exc
    log.warning("job %s: storing its end failed (%s); trying again", job_id, exc, extra=extra)
    await asyncio.sleep(END_RETRY_DELAYS_S[failures])
    return failures + 1


def log_dropped(logger: logging.Logger, job_id: str, event: Event, extra: dict[str, Any]) -> None:
    """A run's end not written: the job is no longer this worker's (its lease was lost, it was
    deleted or ended elsewhere)."""
    logger.warning(
        "job %s is no longer held by this worker; %s dropped", job_id, event.value, extra=extra
    )


class EndCommit(ABC):
    """Writing the run's end (JobRun sets these)."""

    ctx: RunContext
    job: Job
    backend: Backend
    settled: bool
    _relay: JobRelay

    @abstractmethod
    def _extra(self, action: str, **more: Any) -> dict[str, Any]:
        """The log record's fields for `action` on this run."""

    async def _commit_end(self, event: Event, changes: Changes) -> Job | None:
        """`_transition`'s store write (see there)."""
        store = self.ctx.store
        # First as if nothing moved (one round trip); when the job moved (canceling), read it.
        current: Job | None = self.job
        stale = True  # the first try assumes the status this run last saw
        failures = 0  # of the store: a moment's failure must not undo the run's outcome
        for _ in range(5 + len(END_RETRY_DELAYS_S)):
            if current is None:
                try:
                    current = await store.get(self.job.id)
                except StoreError as exc:
                    failures = await self._store_failed(exc, failures)
                    continue
                stale = False
                if failures and current is not None and current.terminal:
                    # the write that failed had committed (its answer was lost), or the job
                    # was ended meanwhile: either way, this is how it ended
                    return self._committed(current)
            if (
                current is None
                or current.status not in ACTIVE
                or current.worker_id != self.ctx.worker_id
            ):
                self.settled = True
                log_dropped(log, self.job.id, event, self._extra("job_lost"))
                return None
            try:
                job = await store.transition(
                    self.job.id,
                    event,
                    expect=current.status,
                    changes=changes,
                    worker_id=self.ctx.worker_id,
                )
            except IllegalTransition:
                if not stale:
                    raise
                # e.g. CANCELED planned from `running` while the API made it `canceling`
                current = None
                continue
            except Conflict:
                current = None
                continue
            except StoreError as exc:
                failures = await self._store_failed(exc, failures)
                current = None  # (it may have committed: read it again)
                continue
            stages.mark(job.id, "committed")
            log.info(
                "job %s %s on backend %s",
                job.id,
                job.status.value,
                self.backend.name,
                extra=self._extra(f"job_{event.value}", status=job.status.value),
            )
            return self._committed(job)
        return None

    def _committed(self, job: Job) -> Job:
        """`job` as the end's write left it: this run's, told to whoever waits for it here."""
        self.job = job
        self.settled = job.status not in ACTIVE
        if job.terminal:
            self._relay.settled(job)
            for tell in self.ctx.finished:
                tell(job)
        return job

    async def _store_failed(self, exc: StoreError, failures: int) -> int:
        return await store_failed(exc, failures, self.job.id, self._extra("end_store_retry"))


__all__ = ["END_RETRY_DELAYS_S", "EndCommit", "log_dropped", "store_failed"]
