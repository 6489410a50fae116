"""A run's end written to the store (`EndCommit`, mixed into `RunEnding`, dispatch.run_end):
one transition from the status the run last saw, read again when the job moved meanwhile (the
API made it `canceling`); through a store failing a moment (a PostgreSQL connection dropped,
SQLite locked by another process), written again or found written, so that the run's outcome
stands: a failed write used to fail the run and send the job back to the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
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

#: The waits before the run's end is written again after the store failed: these, then the last
#: of them again and again, for as long as the job's lease (`StoreOutage.patience_s`).
END_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)

#: Of a long outage, one failure in this many is logged (the first always is).
LOG_EVERY = 10


class OutageOutlasted(StoreError):
    """The store failed for longer than a run's end may wait (StoreOutage): the run is over
    without it; the job is left to its lease."""


@dataclasses.dataclass
class StoreOutage:
    """The store failing while a run's end is written (a PostgreSQL connection dropped, SQLite
    locked by another process, the disk full): the end is written again after each of
    END_RETRY_DELAYS_S, then every last of them, for up to `patience_s` (the job's lease) from
    the first failure, so that a store back within that time takes the run's outcome as it
    is; beyond it OutageOutlasted goes up (the run is over: the job's lease runs out and its
    next attempt adopts the prompt by id). Ownership needs no guard here: each write names
    this worker and the status it expects, so one that comes after the job was taken from it
    changes nothing."""

    job_id: str
    extra: dict[str, Any]
    patience_s: float
    failures: int = 0
    first_s: float = 0.0

    async def failed(self, exc: StoreError) -> None:
        """The store failed once more: wait before the next try; `exc` up when out of
        patience."""
        now = time.monotonic()
        if not self.failures:
            self.first_s = now
        delay = END_RETRY_DELAYS_S[min(self.failures, len(END_RETRY_DELAYS_S) - 1)]
        if now + delay - self.first_s > self.patience_s:
            raise OutageOutlasted(
                f"{exc} (for {now - self.first_s:.0f} s, {self.failures + 1} tries)"
            ) from exc
        if self.failures % LOG_EVERY == 0:
            log.warning(
                "job %s: storing its end failed (%s); trying again", self.job_id, exc,
                extra=self.extra,
            )  # fmt: skip
        self.failures += 1
        await asyncio.sleep(delay)

    def over(self) -> None:
        """The end was written (or found written) after the failures so far."""
        if self.failures:
            log.info(
                "job %s: its end stored after %d failed tries over %.1f s",
                self.job_id, self.failures, time.monotonic() - self.first_s, extra=self.extra,
            )  # fmt: skip


def log_dropped(logger: logging.Logger, job_id: str, event: Event, extra: dict[str, Any]) -> None:
    """A run's end not written: the job is no longer this worker's (its lease was lost, it was
    deleted or ended elsewhere)."""
    logger.warning(
        "job %s is no longer held by this worker; %s dropped", job_id, event.value, extra=extra
    )


def log_outlasted(
    logger: logging.Logger, job_id: str, exc: OutageOutlasted, extra: dict[str, Any]
) -> None:
    """A run's end not written: the store failed all the while the job's lease allowed."""
    logger.error(
        "job %s: its end could not be stored (%s); left to its lease, then to its next attempt",
        job_id, exc, extra=extra,
    )  # fmt: skip


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
        outage = self._outage()  # a store failing a while must not undo the run's outcome
        moves = 0  # of the job under this run (the API's cancel): a few at most
        while moves < 5:
            if current is None:
                try:
                    current = await store.get(self.job.id)
                except StoreError as exc:
                    await outage.failed(exc)
                    continue
                stale = False
                if outage.failures and current is not None and current.terminal:
                    # the write that failed had committed (its answer was lost), or the job
                    # was ended meanwhile: either way, this is how it ended
                    outage.over()
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
                current, moves = None, moves + 1
                continue
            except Conflict:
                current, moves = None, moves + 1
                continue
            except StoreError as exc:
                await outage.failed(exc)
                current = None  # (it may have committed: read it again)
                continue
            stages.mark(job.id, "committed")
            outage.over()
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

    def _outage(self) -> StoreOutage:
        return StoreOutage(self.job.id, self._extra("end_store_retry"), self.ctx.settings.lease_s)


__all__ = [
    "END_RETRY_DELAYS_S",
    "EndCommit",
    "OutageOutlasted",
    "StoreOutage",
    "log_dropped",
    "log_outlasted",
]
