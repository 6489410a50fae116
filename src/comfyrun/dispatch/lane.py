"""The handler lane: a worker's claim loop for job types other than comfy.

ComfyUI jobs are claimed by the dispatcher when a backend has room; handler jobs need no
backend, so the lane claims them (only the types it serves) while fewer than
`handler_concurrency` of them run, and runs each one (dispatch.handler_run). Beside the loop:
a heartbeat that renews the lease of every job it holds and tells the store which types this
worker serves (the API refuses a job of a type no live worker serves). A worker without
ComfyUI backends runs only a lane, which then also runs the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence

from comfyrun.core.job import Job, JobError, JobStatus
from comfyrun.core.state import Event
from comfyrun.dispatch.dispatcher import past_start_deadline
from comfyrun.dispatch.handler_run import HandlerRun, HandlerRunContext
from comfyrun.dispatch.retry_clock import RetryClock
from comfyrun.dispatch.stale import release_stale_jobs
from comfyrun.dispatch.sweeper import Sweeper
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import Changes

log = logging.getLogger(__name__)


class HandlerLane:
    """Claims and runs jobs of `types` (which the context's registry runs) until stopped.

    `announce`: every type this worker serves, told to the store on each heartbeat (the
    dispatcher's "comfy" included). `sweeper`: run one when no dispatcher does.
    """

    def __init__(
        self,
        ctx: HandlerRunContext,
        types: Sequence[str],
        *,
        announce: Sequence[str] | None = None,
        sweeper: Sweeper | None = None,
        release_stale: bool = False,
    ) -> None:
        self.ctx = ctx
        self.types = tuple(sorted(set(types)))
        self.announce = tuple(sorted(set(announce if announce is not None else types)))
        self.sweeper = sweeper
        self.release_stale = release_stale
        self._runs: dict[str, tuple[HandlerRun, asyncio.Task[None]]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._retries = RetryClock(ctx.settings.idle_wait_s)
        if ctx.on_retry is None:
            self.ctx = dataclasses.replace(ctx, on_retry=self._retries.note)

    @property
    def running_jobs(self) -> list[str]:
        return list(self._runs)

    async def start(self) -> None:
        if self.release_stale:
            await self._release_stale_jobs()
        await self._announce()
        self._stopping = False
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="lane:heartbeat")]
        if self.types:
            self._tasks.insert(0, asyncio.create_task(self._claim_loop(), name="lane:claim"))
        if self.sweeper is not None:
            await self.sweeper.sweep_once()
            self._tasks.append(asyncio.create_task(self.sweeper.run(), name="lane:sweeper"))
        log.info(
            "handler lane of %s started for %s",
            self.ctx.worker_id,
            ", ".join(self.types) or "no types",
            extra={"action": "lane_start", "types": list(self.types)},
        )

    async def stop(self, drain: bool = False) -> None:
        """Stop claiming; with `drain` let the jobs in hand finish, else requeue them."""
        self._stopping = True
        for task in self._tasks[:1] if self.types else []:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._idle.wait()
        for run, task in list(self._runs.values()):
            run.abandon = "shutdown"
            task.cancel()
        tasks = [task for _, task in self._runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.ctx.settings.stop_grace_s + 1.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(ComfyrunError):
            await self.ctx.store.retire_worker(self.ctx.worker_id)
        await self.ctx.registry.close()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # --- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        settings = self.ctx.settings
        while not self._stopping:
            if len(self._runs) >= settings.handler_concurrency:
                self._room.clear()
                await self._room.wait()
                continue
            token = self.ctx.store.work_token(self.types)  # before the claim: see wait_for_work
            try:
                job = await self.ctx.store.claim(
                    self.ctx.worker_id, settings.lease_s, types=self.types
                )
                if job is None:
                    await self.ctx.store.wait_for_work(
                        self._retries.idle_timeout(), since=token, types=self.types
                    )
                    continue
            except ComfyrunError as exc:
                # (a failed wait too: the lane claims on once the store answers again)
                log.warning("claim failed: %s", exc, extra={"action": "claim_error"})
                await asyncio.sleep(1.0)  # the store is failing: back off
                continue
            if past_start_deadline(job, time.time()):
                await self._fail_late(job)
                continue
            self._start(job)

    def _start(self, job: Job) -> None:
        run = HandlerRun(self.ctx, job)
        task = asyncio.create_task(run.run(), name=f"handler:{job.id}")
        self._runs[job.id] = (run, task)
        self._idle.clear()
        task.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        current = self._runs.get(job_id)
        if current is not None and current[1] is task:
            del self._runs[job_id]
        self._room.set()
        if not self._runs:
            self._idle.set()

    async def _fail_late(self, job: Job) -> None:
        error = JobError(
            code="queue_timeout",
            message="the job was not started before its deadline (start_by); it was not run",
            details={"start_by": job.options.get("start_by")},
        )
        with contextlib.suppress(ComfyrunError):
            await self.ctx.store.transition(
                job.id,
                Event.FAIL,
                expect=JobStatus.RUNNING,
                changes=Changes(
                    error=error, expires_at=time.time() + self.ctx.settings.retention_s
                ),
                worker_id=self.ctx.worker_id,
            )

    # --- leases and presence -----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.settings.heartbeat_s)  # a lease is renewed on a clock
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        """Tell the store this worker is alive (and its types); renew each held job's lease,
        giving up (without touching the store) a job whose lease was lost."""
        await self._announce()
        store, settings = self.ctx.store, self.ctx.settings
        for job_id, (run, task) in list(self._runs.items()):
            if run.settled:
                continue
            try:
                held = await store.renew(job_id, self.ctx.worker_id, settings.lease_s)
            except ComfyrunError as exc:
                log.warning("renewing the lease of job %s failed: %s", job_id, exc)
                continue
            if not held and not task.done() and not run.settled:
                log.warning(
                    "job %s: lease lost; giving it up",
                    job_id,
                    extra={"action": "lease_lost", "job_id": job_id, "backend": None},
                )
                run.abandon = "lease_lost"
                task.cancel()

    async def _announce(self) -> None:
        try:
            await self.ctx.store.announce_worker(self.ctx.worker_id, self.announce)
        except ComfyrunError as exc:
            log.warning("announcing this worker's job types failed: %s", exc)

    async def _release_stale_jobs(self) -> None:
        await release_stale_jobs(self.ctx.store, self.ctx.worker_id, self._runs)


__all__ = ["HandlerLane"]
