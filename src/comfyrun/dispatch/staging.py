"""Staging: a claimed job whose model files are not all in the model cache downloads them with
no backend held, then asks for one.

A job's run holds a slot on a backend from its claim to its end. A job that brings model files
(`options.models`, dispatch.models) used to download them inside its run, for up to an hour,
its backend (a GPU) idle all the while and other work waiting for it. Now such a job has two
phases. *Stage*: the dispatcher gives its slot back at once and the job joins this worker's
staging set, where its files download into the cache (pinned by a cache lease, so that nothing
evicts them before its run); its lease on the job is renewed by the dispatcher's heartbeat; it
is `running` with `model_download` events, as before; a cancel ends it at once
(dispatch.cancel.unless_canceled). *Place*: once its files are in, it is parked (claimed, not
placed: dispatch.placing), and parked jobs take a free slot before any new claim; its run then
finds every file in the cache (no download, nothing recorded) and pins them for itself; the
staging's pin is let go when that run ends.

The set is capped (`max_staging_jobs`): a claim made while it is full (counting the claims in
flight that may add to it) passes the store a choice that takes no job needing a download
(`without_downloads`, a ClaimChoice whose pick may take none), so a worker cannot claim the
whole queue of such jobs; jobs needing none are still claimed (among the first
`model_routing_window` queued: a claim looks no further). A job claimed all the same at
the cap (a hand-off at enqueue raced a claim) downloads inside its run, as before.

A download that fails ends the job as it did inside a run: its error (`input_rejected`,
`hash_mismatch`, `storage_error`) goes to the retry policy as an input error. A job whose files
are all cached (or that brings none) skips staging: it costs one dictionary lookup a file.
On shutdown a staging job goes back to the queue; a lost lease drops it without a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from comfyrun.core.job import ACTIVE, Job, JobError, JobStatus
from comfyrun.core.retry import FailureKind, decide
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import CancelRequested, unless_canceled
from comfyrun.dispatch.models import fetch_models
from comfyrun.dispatch.run_context import RunContext
from comfyrun.errors import ComfyrunError, Conflict, IllegalTransition, InvalidRequest
from comfyrun.models import Lease, ModelCache, ModelRef, parse_models
from comfyrun.store.base import Changes, ClaimChoice

log = logging.getLogger(__name__)

#: Tries of a staging job's end when the job moved under it (the API's cancel).
_END_TRIES = 5


class _Stage:
    """One job in the staging set: its download's task, and why it was stopped from outside."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        #: "shutdown": back to the queue; "lease_lost": the store left alone.
        self.abandon: str | None = None


class Staging:
    """A worker's staging set (see the module docstring). `staged(job)` is told each job whose
    files are all in (the dispatcher parks it); `changed()` whenever a place in the set frees
    (the dispatcher's claim loop looks again)."""

    def __init__(
        self,
        cache: ModelCache,
        ctx: RunContext,
        *,
        staged: Callable[[Job], None],
        changed: Callable[[], None],
    ) -> None:
        self.cache = cache
        self.ctx = ctx
        self.cap = max(1, ctx.settings.max_staging_jobs)
        self._staged = staged
        self._changed = changed
        self._stages: dict[str, _Stage] = {}
        #: Claims in flight allowed to take a job that downloads (each may add one here).
        self._promised = 0
        #: The cache leases of staged jobs, held until their run ends (`release`).
        self._leases: dict[str, Lease] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._stages

    def __len__(self) -> int:
        return len(self._stages)

    # --- claims ------------------------------------------------------------------------------
    def needs(self, job: Job) -> bool:
        """Whether `job` must download model files first (one is not in the cache)."""
        return bool(job.options.get("models")) and any(
            self.cache.find(ref) is None for ref in _refs(job)
        )

    def promise(self) -> bool:
        """A claim about to be made may take a job that downloads (there is room for it):
        True, and the place is kept for it until `unpromise`; False when the set is full."""
        if len(self._stages) + self._promised >= self.cap:
            return False
        self._promised += 1
        return True

    def unpromise(self) -> None:
        self._promised -= 1

    @property
    def full(self) -> bool:
        return len(self._stages) + self._promised >= self.cap

    def without_downloads(self, inner: ClaimChoice | None, window: int) -> ClaimChoice:
        """A claim's choice that takes no job that must download first (`inner`'s pick among
        the others, else the best of them), or none at all."""

        def pick(jobs: Sequence[Job]) -> int | None:
            if inner is None:  # the first that needs none: the jobs after it are not looked at
                return next((i for i, job in enumerate(jobs) if not self.needs(job)), None)
            ready = [i for i, job in enumerate(jobs) if not self.needs(job)]
            if not ready:
                return None
            index = inner.pick([jobs[i] for i in ready])
            return ready[index] if index is not None and 0 <= index < len(ready) else ready[0]

        return ClaimChoice(window=inner.window if inner is not None else window, pick=pick)

    def take(self, job: Job, backend: str) -> bool:
        """Stage `job` (just claimed, for `backend`) when it must download first and the set
        has room; False: it runs as it is."""
        stale = self._stages.get(job.id)
        if stale is not None and stale.task is not None:
            # its lease ran out unrenewed and this worker claimed it again: the old stage is
            # not this attempt's (it would park the job beside its new run)
            stale.abandon = "lease_lost"
            stale.task.cancel()
            del self._stages[job.id]
        if len(self._stages) >= self.cap or not self.needs(job):
            return False
        stage = self._stages[job.id] = _Stage(job)
        stage.task = asyncio.create_task(self._stage(stage, backend), name=f"stage:{job.id}")
        for tell in self.ctx.run_started:
            tell(job.id)
        log.info(
            "job %s downloads its model files before it takes a backend",
            job.id,
            extra={"action": "job_staging", "job_id": job.id, "backend": None},
        )
        return True

    def release(self, job_id: str) -> None:
        """The staged job's run is over (or it left this worker): its files may be evicted."""
        lease = self._leases.pop(job_id, None)
        if lease is not None:
            lease.release()

    # --- leases and stopping -----------------------------------------------------------------
    async def renew(self) -> None:
        """Renew the lease of every staging job; give up (no write) one whose lease was lost."""
        settings, store = self.ctx.settings, self.ctx.store
        for job_id, stage in list(self._stages.items()):
            try:
                held = await store.renew(job_id, self.ctx.worker_id, settings.lease_s)
            except ComfyrunError as exc:
                log.warning("renewing the lease of job %s failed: %s", job_id, exc)
                continue
            if not held and stage.task is not None and not stage.task.done():
                log.warning(
                    "job %s: lease lost while staging; giving it up",
                    job_id,
                    extra={"action": "lease_lost", "job_id": job_id, "backend": None},
                )
                stage.abandon = "lease_lost"
                stage.task.cancel()

    def abandon(self, job_id: str, why: str) -> None:
        """Stop a staging job's download without a write (`why`: "unstored", a hand-off
        whose enqueue did not commit: the job does not exist)."""
        stage = self._stages.get(job_id)
        if stage is not None and stage.task is not None:
            stage.abandon = why
            stage.task.cancel()
        self.release(job_id)

    async def stop(self) -> None:
        """Stop every download; their jobs go back to the queue."""
        tasks = []
        for stage in self._stages.values():
            if stage.task is not None:
                stage.abandon = stage.abandon or "shutdown"
                stage.task.cancel()
                tasks.append(stage.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.ctx.settings.stop_grace_s + 1.0)
        for job_id in list(self._leases):
            self.release(job_id)

    # --- one job's stage ---------------------------------------------------------------------
    async def _stage(self, stage: _Stage, backend: str) -> None:
        job, ctx = stage.job, self.ctx
        settings, store = ctx.settings, ctx.store
        try:
            fetching = fetch_models(self.cache, store, job, _refs(job), backend=backend)
            lease = await unless_canceled(
                fetching, store, job.id, settings, dropped=_release_dropped
            )
        except CancelRequested:
            await self._end(job, Event.CANCELED, Changes())
        except asyncio.CancelledError:
            if stage.abandon == "shutdown":
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(settings.stop_grace_s):
                        await self._end(job, Event.REQUEUE, Changes(clear_lease=True))
            raise
        except ComfyrunError as exc:
            error = JobError(code=exc.code, message=exc.message, details=exc.details)
            await self._fail(job, FailureKind.INPUT_ERROR, error)
        except Exception as exc:  # a bug must not leave the job running
            log.exception("job %s: staging failed", job.id)
            error = JobError(code="internal_error", message=f"{type(exc).__name__}: {exc}")
            await self._fail(job, FailureKind.BACKEND_LOST, error)
        else:
            self.release(job.id)
            self._leases[job.id] = lease
            del self._stages[job.id]
            log.info(
                "job %s has its model files; it waits for a backend",
                job.id,
                extra={"action": "job_staged", "job_id": job.id, "backend": None},
            )
            self._staged(job)
        finally:
            if self._stages.get(job.id) is stage:
                del self._stages[job.id]
            for tell in ctx.run_over:  # (a staged job is parked: no run of this worker has it)
                tell(job.id)
            self._changed()

    async def _fail(self, job: Job, kind: FailureKind, error: JobError) -> None:
        now = time.time()
        decision = decide(job, kind, now=now)
        if decision.retry:
            if self.ctx.on_retry is not None:
                self.ctx.on_retry(decision.next_run_at)
            await self._end(
                job, Event.RETRY, Changes(error=error, next_run_at=decision.next_run_at)
            )
        else:
            expires = now + self.ctx.settings.retention_s
            await self._end(job, Event.FAIL, Changes(error=error, expires_at=expires))

    async def _end(self, job: Job, event: Event, changes: Changes) -> None:
        """`event` from whichever active status the job is in now (the API may have made it
        `canceling`); nothing when it is no longer this worker's."""
        store, worker = self.ctx.store, self.ctx.worker_id
        expect = JobStatus.CANCELING if event is Event.CANCELED else JobStatus.RUNNING
        try:
            for _ in range(_END_TRIES):
                try:
                    ended = await store.transition(
                        job.id, event, expect=expect, changes=changes, worker_id=worker
                    )
                except (IllegalTransition, Conflict):
                    current = await store.get(job.id)
                    if current is None or current.status not in ACTIVE:
                        return
                    if current.worker_id != worker:
                        return
                    expect = current.status
                    continue
                log.info(
                    "job %s %s while staging",
                    job.id,
                    ended.status.value,
                    extra={"action": f"job_{event.value}", "job_id": job.id, "backend": None},
                )
                if ended.terminal:
                    for tell in self.ctx.finished:
                        tell(ended)
                return
        except ComfyrunError as exc:  # the store failing: the job is left to its lease
            log.warning("job %s: storing its end while staging failed: %s", job.id, exc)


def _refs(job: Job) -> tuple[ModelRef, ...]:
    try:
        return parse_models(job.options.get("models"))
    except InvalidRequest:  # refused at submission; an old record's run fails it as before
        return ()


async def _release_dropped(lease: Lease) -> None:
    lease.release()


__all__ = ["Staging"]
