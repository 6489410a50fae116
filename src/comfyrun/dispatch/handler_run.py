"""One handler job's life on a worker: inputs, handler, outputs, chain, final state.

The run owns one claimed job of a type other than comfy (a worker without ComfyUI that is set
to fail comfy jobs runs those here too, to fail them with a clear message). It fetches the
job's inputs to a work folder, runs its handler (comfyrun.handlers) until it returns or the job
is canceled or times out, stores the outputs like ComfyUI outputs, runs the job's chain, and
commits the job's end with its outputs. Failures are classified (handler_exec.classify) and the
retry policy decides between retry and fail, as for comfy jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyrun.core.job import ACTIVE, COMFY, Job, JobError, JobStatus, Output, Progress
from comfyrun.core.retry import FailureKind, decide
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import wait_cancel_requested
from comfyrun.dispatch.chain import run_steps
from comfyrun.dispatch.end_commit import OutageOutlasted, StoreOutage, log_dropped, log_outlasted
from comfyrun.dispatch.handler_exec import (
    Stopped,
    classify,
    new_workdir,
    remove_workdir,
    run_handler,
    stop_signal,
    store_outputs,
)
from comfyrun.dispatch.progress import ProgressWriter
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.errors import Conflict, IllegalTransition, StoreError
from comfyrun.handlers.context import (
    CancelToken,
    HandlerContext,
    InputFile,
    OutputSink,
    ProgressReporter,
)
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.handlers.spec import chain_of
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import Changes, JobStore

log = logging.getLogger(__name__)

#: Fetches a job's `inputs` into a folder, as the files its handler reads.
InputLoader = Callable[[Job, Path], Awaitable[list[InputFile]]]


@dataclass(frozen=True, slots=True)
class HandlerRunContext:
    """What every handler run of one worker shares."""

    store: JobStore
    storage: OutputStorage
    settings: DispatchSettings
    worker_id: str
    registry: HandlerRegistry
    load_inputs: InputLoader
    #: Why this worker fails comfy jobs it claims (it has no ComfyUI), when it claims them.
    comfy_unavailable: str = "this worker runs no ComfyUI backend"
    on_retry: Callable[[float], None] | None = None


class HandlerRun:
    """Runs `job` with its handler. `run()` never raises except on cancellation."""

    def __init__(self, ctx: HandlerRunContext, job: Job) -> None:
        self.ctx = ctx
        self.job = job
        #: "shutdown" requeues the job when the run is cancelled; "lease_lost" leaves the store
        #: alone (another worker may hold the job now).
        self.abandon: str | None = None
        self.settled = False
        self._progress = ProgressWriter(ctx.store, job.id, ctx.settings.progress_interval_s)

    async def run(self) -> None:
        workdir = await new_workdir(f"comfyrun-{self.job.type}-")
        try:
            await self._run(workdir)
        except asyncio.CancelledError:
            if self.abandon == "shutdown":
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.ctx.settings.stop_grace_s):
                        await self._settle(Event.REQUEUE, Changes(clear_lease=True))
            raise
        except OutageOutlasted as exc:  # writing more would fail too; the lease runs out
            log_outlasted(log, self.job.id, exc, self._extra("run_error"))
        except Exception as exc:  # a bug or a failing store must not leave the job running
            log.exception("job %s: handler run failed", self.job.id, extra=self._extra("run_error"))
            with contextlib.suppress(Exception):
                await self._fail(
                    FailureKind.BACKEND_LOST,
                    JobError(code="internal_error", message=f"{type(exc).__name__}: {exc}"),
                )
        finally:
            self._progress.close()
            await remove_workdir(workdir)

    async def _run(self, workdir: Path) -> None:
        job, ctx = self.job, self.ctx
        log.info(
            "job %s (%s) claimed (attempt %d)",
            job.id,
            job.type,
            job.attempts,
            extra=self._extra("job_claimed", status=job.status.value),
        )
        handler = ctx.registry.get(job.type)
        if handler is None:
            code, why = "handler_unavailable", f"this worker has no handler for {job.type!r}"
            if job.type == COMFY:
                code, why = "comfy_unavailable", ctx.comfy_unavailable
            await self._fail(FailureKind.VALIDATION, JobError(code=code, message=why))
            return
        timeout = job.timeout_s or ctx.settings.default_timeout_s
        stop = stop_signal(wait_cancel_requested(ctx.store, job.id, ctx.settings), timeout)
        try:
            outputs = await self._execute(handler, workdir, stop)
        except Stopped as exc:
            if exc.reason == "canceled":
                await self._settle(Event.CANCELED, self._final(), expect=JobStatus.CANCELING)
            else:
                await self._fail(*classify(exc))
            return
        except Exception as exc:
            await self._fail(*classify(exc))
            return
        finally:
            stop.cancel()
        changes = self._final(outputs=tuple(outputs), progress=Progress(value=1.0))
        await self._settle(Event.SUCCEED, changes)

    async def _execute(
        self, handler: Any, workdir: Path, stop: asyncio.Future[str]
    ) -> list[Output]:
        job, ctx = self.job, self.ctx
        inputs = await ctx.load_inputs(job, workdir / "in")
        hctx = HandlerContext(
            job_id=job.id,
            type=job.type,
            params=dict(job.params),
            inputs=inputs,
            outputs=OutputSink(workdir),
            progress=ProgressReporter(self._progress.progress, asyncio.get_running_loop()),
            cancel=CancelToken(),
            resources=ctx.registry.resources(job.type),
            workdir=workdir,
            attempt=job.attempts,
        )
        await run_handler(handler, hctx, stop=stop, grace_s=ctx.settings.handler_stop_grace_s)
        outputs = await store_outputs(
            job,
            hctx.outputs.items,
            ctx.storage,
            node_id=job.type,
            handler=job.type,
            inline_cap=ctx.settings.inline_max_bytes,
        )
        steps = chain_of(job.options)
        if not steps:
            return outputs
        return await run_steps(
            job,
            outputs,
            steps,
            registry=ctx.registry,
            storage=ctx.storage,
            settings=ctx.settings,
            stop=stop,
            workdir=workdir / "then",
            on_progress=self._progress.progress,
        )

    # --- endings ----------------------------------------------------------------------------
    def _final(self, **changes: Any) -> Changes:
        return Changes(expires_at=time.time() + self.ctx.settings.retention_s, **changes)

    async def _fail(self, kind: FailureKind, error: JobError) -> None:
        now = time.time()
        decision = decide(self.job, kind, now=now)
        if decision.retry:
            if self.ctx.on_retry is not None:
                self.ctx.on_retry(decision.next_run_at)
            await self._settle(Event.RETRY, Changes(error=error, next_run_at=decision.next_run_at))
        else:
            await self._settle(Event.FAIL, self._final(error=error))

    async def _settle(
        self, event: Event, changes: Changes, *, expect: JobStatus = JobStatus.RUNNING
    ) -> None:
        """Apply `event` from the status the job is in now (the API may have moved it to
        canceling meanwhile); nothing when the job is no longer this worker's."""
        await self._progress.settle()  # a final transition: no progress write may follow it
        store, worker = self.ctx.store, self.ctx.worker_id
        outage = StoreOutage(self.job.id, self._extra("end_store_retry"), self.ctx.settings.lease_s)
        moves = 0  # of the job under this run (the API's cancel): a few at most
        while moves < 3:
            try:
                job = await store.transition(
                    self.job.id, event, expect=expect, changes=changes, worker_id=worker
                )
            except (Conflict, IllegalTransition, StoreError) as exc:
                if isinstance(exc, StoreError):
                    await outage.failed(exc)
                else:
                    moves += 1
                current = await self._reread(outage)
                if outage.failures and current is not None and current.terminal:
                    outage.over()
                    self.job, self.settled = current, True  # the failed write had committed
                    return
                if current is None or current.status not in ACTIVE or current.worker_id != worker:
                    break
                if current.status is expect and not isinstance(exc, StoreError):
                    raise
                expect = current.status
                continue
            outage.over()
            self.job, self.settled = job, job.status not in ACTIVE
            log.info(
                "job %s %s",
                job.id,
                job.status.value,
                extra=self._extra(f"job_{event.value}", status=job.status.value),
            )
            return
        self.settled = True
        log_dropped(log, self.job.id, event, self._extra("job_lost"))

    async def _reread(self, outage: StoreOutage) -> Job | None:
        """The job read again after its end's write failed (the store failing meanwhile too:
        waited for and read again, as the write)."""
        while True:
            try:
                return await self.ctx.store.get(self.job.id)
            except StoreError as exc:
                await outage.failed(exc)

    def _extra(self, action: str, **more: Any) -> dict[str, Any]:
        return {
            "action": action,
            "job_id": self.job.id,
            "backend": None,
            "type": self.job.type,
            **more,
        }


__all__ = ["HandlerRun", "HandlerRunContext", "InputLoader"]
