"""How a run ends: its outputs collected and the job succeeded, or its failure classified
(core.retry.FailureKind) and the job retried, requeued or failed, each in one final transition;
or, when cancelled from outside, its prompt left to the next attempt. `RunEnding` is mixed into
`JobRun` (dispatch.run), which sets what it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from comfyrun import stages
from comfyrun.backends.pool import Backend
from comfyrun.comfy.errors import ComfyExecutionError, ComfyHTTPError
from comfyrun.comfy.result import PromptResult
from comfyrun.core.job import Job, JobError, JobStatus, Progress
from comfyrun.core.retry import FailureKind, decide
from comfyrun.core.state import Event
from comfyrun.dispatch.chain import ChainFailure, chain_outputs
from comfyrun.dispatch.collect import backend_copies, collect_outputs, names_files
from comfyrun.dispatch.end_commit import EndCommit
from comfyrun.dispatch.progress import ProgressWriter
from comfyrun.dispatch.reconcile import stop_prompt
from comfyrun.dispatch.relay import JobRelay
from comfyrun.dispatch.run_context import OUTPUT_MISSING, UNSENT, RunContext
from comfyrun.errors import BackendError, ComfyrunError, is_disk_full
from comfyrun.store import transition
from comfyrun.store.base import Changes

log = logging.getLogger("comfyrun.dispatch.run")


class RunEnding(EndCommit):
    """The ending half of a job's run (JobRun sets these; `EndCommit` writes the end)."""

    ctx: RunContext
    job: Job
    backend: Backend
    client: Any
    prompt_id: str | None
    abandon: str | None
    settled: bool
    ended: bool
    _progress: ProgressWriter
    _relay: JobRelay
    _placement_notes: set[asyncio.TimerHandle | asyncio.Task[None]]
    _start_unwritten: float | None
    #: A cancel was heard: the run's end is `canceled` whatever the prompt did (core.state).
    _cancel_heard: bool = False

    @abstractmethod
    def _take_the_rest(self) -> None:
        """Handle the prompt's messages not taken yet (before the final transition)."""

    async def _result_of(self, fut: asyncio.Future[Any]) -> PromptResult | BaseException:
        try:
            res: PromptResult = fut.result()
            return res
        except (BackendError, TimeoutError) as exc:
            return exc

    async def _on_result(self, outcome: PromptResult | BaseException) -> None:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, ComfyExecutionError):
                await self._node_failed(outcome)
            else:
                await self._backend_lost(f"the prompt was lost: {outcome}")
            return
        if outcome.ok:
            await self._succeed(outcome)
        elif outcome.status == "error" and isinstance(outcome.error, ComfyExecutionError):
            await self._node_failed(outcome.error)
        elif outcome.status == "interrupted":
            await self._finish_failure(
                FailureKind.BACKEND_LOST,
                JobError(code="interrupted", message="the prompt was interrupted on the backend"),
            )
        else:
            await self._backend_lost(f"the prompt ended {outcome.status}: {outcome.error}")

    async def _node_failed(self, err: ComfyExecutionError) -> None:
        kind = FailureKind.NODE_ERROR  # final, unless the job opts in to retries
        if err.out_of_memory:
            kind = FailureKind.OUT_OF_MEMORY
        elif err.disk_full:  # the machine's state, not the workflow's: retried
            kind = FailureKind.DISK_FULL
        error = JobError(
            code="node_execution_error" if kind is FailureKind.NODE_ERROR else kind.value,
            message=err.message,
            node_id=err.node_id,
            class_type=err.node_type,
            traceback=err.traceback,
            details={"exception_type": err.exception_type, "prompt_id": err.prompt_id},
        )
        await self._finish_failure(kind, error)

    async def _on_cancel(self, result: asyncio.Future[Any]) -> None:
        self._cancel_heard = True
        outcome, gone = await self._stop_prompt(result, self.ctx.settings.cancel_grace_s)
        if isinstance(outcome, PromptResult) and outcome.ok:
            # it finished before the interrupt landed: its outputs are kept, the job ends
            # canceled all the same (core.state: a cancel answered `canceling` is kept)
            await self._succeed(outcome)
            return
        if outcome is None and not gone:
            self.ctx.pool.mark_unhealthy(
                self.backend, f"prompt {self.prompt_id} did not stop after a cancel"
            )
        await self._transition(
            Event.CANCELED, Changes(backend=self.backend.name, prompt_id=self.prompt_id)
        )

    async def _on_timeout(self, result: asyncio.Future[Any], limit: float) -> None:
        outcome, gone = await self._stop_prompt(result, self.ctx.settings.interrupt_grace_s)
        if isinstance(outcome, PromptResult) and outcome.ok:
            await self._succeed(outcome)
            return
        if outcome is None and not gone:
            self.ctx.pool.mark_unhealthy(
                self.backend,
                f"prompt {self.prompt_id} of job {self.job.id} did not stop within "
                f"{self.ctx.settings.interrupt_grace_s:g}s of an interrupt after its timeout",
            )
        await self._finish_failure(
            FailureKind.TIMEOUT,
            JobError(code="timeout", message=f"the job ran past its timeout of {limit:g}s"),
        )

    async def _stop_prompt(
        self, result: asyncio.Future[Any], grace: float
    ) -> tuple[PromptResult | BaseException | None, bool]:
        """Interrupt the prompt (or delete it from ComfyUI's queue) and wait up to `grace` for
        its outcome. Returns (outcome or None, whether ComfyUI no longer knows the prompt)."""
        assert self.prompt_id is not None
        settled, gone = await stop_prompt(
            self.client,
            self.prompt_id,
            result,
            grace_s=grace,
            call_timeout_s=self.ctx.settings.submit_timeout_s,
        )
        return (await self._result_of(result) if settled else None), gone

    async def _succeed(self, outcome: PromptResult) -> None:
        limit = self.ctx.settings.output_timeout_s
        try:
            async with asyncio.timeout(limit) as copying:
                outputs = await collect_outputs(
                    self.job,
                    outcome.outputs,
                    backend=self.backend,
                    client=self.client,
                    storage=self.ctx.storage,
                    inline_cap=self.ctx.settings.inline_max_bytes,
                    cleaned=self.ctx.janitor is not None,
                )
        except TimeoutError:
            if not copying.expired():
                raise
            await self._backend_lost(f"copying the outputs took longer than {limit:g} s")
            return
        except ComfyHTTPError as exc:
            if exc.status != 404:
                await self._backend_lost(f"reading outputs failed: {exc}")
                return
            # ComfyUI answered, without the file: not a backend that is down (its other jobs
            # go on). A prompt it answers from its cache names the files an identical earlier
            # prompt saved: run again once, those nodes' cache defeated (RECACHE_INPUT)
            await self._output_missing(outcome, exc)
            return
        except BackendError as exc:
            await self._backend_lost(f"reading outputs failed: {exc}")
            return
        except ComfyrunError as exc:
            # a full disk is retried (within max_retries) as a full disk in a node is; any
            # other failure of the storage is taken as lasting (its settings, its rights)
            full = is_disk_full(exc)
            await self._finish_failure(
                FailureKind.DISK_FULL if full else FailureKind.BACKEND_LOST,
                JobError(
                    code="disk_full" if full else exc.code,
                    message=f"storing outputs failed: {exc.message}",
                ),
                retry=full,
            )
            return
        stages.mark(self.job.id, "collected")
        if self.job.options.get("then"):  # follow-up steps on the outputs (dispatch.chain)
            chained = await chain_outputs(self.job, outputs, self.ctx)
            if isinstance(chained, ChainFailure):
                await self._finish_failure(chained.kind, chained.error, retry=chained.retry)
                return
            outputs = chained
        total = len(self.job.workflow)
        done = await self._transition(
            Event.SUCCEED,
            Changes(
                progress=Progress(value=1.0, nodes_done=total, nodes_total=total),
                backend=self.backend.name,
                prompt_id=self.prompt_id,
                expires_at=time.time() + self.ctx.settings.retention_s,
                outputs=tuple(outputs),
            ),
        )
        if done is not None and done.terminal and self.ctx.janitor is not None:
            # committed with its outputs: ComfyUI's copies are not needed (a cached identical
            # prompt that names one is run anew: OUTPUT_MISSING)
            self.ctx.janitor.discard(backend_copies(self.backend, outcome.outputs))

    async def _backend_lost(self, reason: str) -> None:
        kind = FailureKind.CRASH if self.backend.managed else FailureKind.BACKEND_LOST
        if not self.backend.is_down:
            self.ctx.pool.mark_unhealthy(self.backend, reason, quarantine=False)
        await self._finish_failure(
            kind, JobError(code="backend_lost", message=f"backend {self.backend.name}: {reason}")
        )

    async def _requeue_unsent(self, error: JobError) -> bool:
        """The job's prompt never reached ComfyUI (its backend could not be reached): the job
        goes back to the queue at once with the attempt not counted, as it was not tried, and
        the backend is left until its health check passes again. Once per attempt that
        counted: a job whose previous try was not sent either (`error` is UNSENT's) is not
        given this again (False; the caller fails the attempt as usual), so a backend that
        passes its health checks but cannot take a prompt does not keep the job forever."""
        previous = self.job.error
        if previous is not None and previous.code == UNSENT:
            return False
        if not self.backend.is_down:
            self.ctx.pool.mark_unhealthy(self.backend, error.message, quarantine=False)
        await self._requeue_uncounted(error, "not tried")
        return True

    async def _requeue_uncounted(self, error: JobError, why: str) -> None:
        """Back to the queue at once, this attempt not counted, `error` kept for the next."""
        log.warning(
            "job %s back in the queue, %s: %s",
            self.job.id,
            why,
            error.message,
            extra=self._extra("job_requeued"),
        )
        if self.ctx.on_retry is not None:
            self.ctx.on_retry(time.time())
        await self._transition(
            Event.REQUEUE,
            Changes(error=error, backend=self.backend.name, uncount_attempt=True),
        )

    async def _output_missing(self, outcome: PromptResult, exc: ComfyHTTPError) -> None:
        """An output ComfyUI named is not in its folder (cleared since an identical prompt
        saved it, and this one came from ComfyUI's cache): back to the queue once, its
        attempt not counted, to run with the nodes that named files made new to the cache;
        failed if that try meets it too."""
        nodes = sorted(n for n, items in outcome.outputs.items() if names_files(items))
        error = JobError(
            code=OUTPUT_MISSING,
            message=f"backend {self.backend.name} named an output it does not have "
            f"({exc.message}). A prompt ComfyUI answers from its cache names the files an "
            "identical earlier prompt saved: was its output folder cleared?",
            details={"nodes": nodes},
        )
        previous = self.job.error
        if previous is not None and previous.code == OUTPUT_MISSING:
            await self._finish_failure(FailureKind.NODE_ERROR, error, retry=False)
            return
        await self._requeue_uncounted(error, "to run anew")

    async def _finish_failure(
        self, kind: FailureKind, error: JobError, *, retry: bool = True
    ) -> None:
        now = time.time()
        decision = decide(self.job, kind, now=now)
        if retry and decision.retry:
            if decision.free_memory_first and self.client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.ctx.settings.submit_timeout_s):
                        await self.client.free(unload_models=True, free_memory=True)
                log.info(
                    "job %s: freed memory on backend %s",
                    self.job.id,
                    self.backend.name,
                    extra=self._extra("backend_free"),
                )
            if self.ctx.on_retry is not None:
                self.ctx.on_retry(decision.next_run_at)
            await self._transition(
                Event.RETRY,
                Changes(
                    error=error,
                    next_run_at=decision.next_run_at,
                    backend=self.backend.name,
                    prompt_id=self.prompt_id,
                ),
            )
        else:
            await self._transition(
                Event.FAIL,
                Changes(
                    error=error,
                    backend=self.backend.name,
                    prompt_id=self.prompt_id,
                    expires_at=now + self.ctx.settings.retention_s,
                ),
            )

    async def _transition(self, event: Event, changes: Changes) -> Job | None:
        """Apply `event` from whichever active status the job is in (the API may have moved it
        to canceling meanwhile). None when the job is no longer this worker's."""
        await self._progress.settle()  # a final transition: no progress write may follow it
        # the prompt's end reaches ComfyUI clients only when the job ends with this transition
        self._take_the_rest()
        self.ended = event in (Event.SUCCEED, Event.FAIL, Event.CANCELED)
        await self._relay.finish(release=self.ended)
        # what a placement note would write goes with this transition: one not yet due is
        # dropped, one being written is let finish first (cancelled mid-way, its statement
        # would be cancelled on the server: on PostgreSQL a connection of its own to ask)
        await settle_placement_notes(self._placement_notes)
        self._placement_notes = set()
        if event in (Event.SUCCEED, Event.FAIL, Event.CANCELED) and self._start_unwritten:
            changes = dataclasses.replace(changes, execution_started_at=self._start_unwritten)
        if event is Event.SUCCEED and self._relay.end_awaited and not self._cancel_heard:
            # a ComfyUI client here is told the end while the commit is under way, the job as
            # that commit writes it (its end stamped here, so that both say the same)
            if changes.finished_at is None:
                changes = dataclasses.replace(changes, finished_at=time.time())
            self._relay.end_early(self._succeeded(changes))
            try:
                return await self._commit_end(event, changes)
            finally:
                self._relay.commit_over()
        return await self._commit_end(event, changes)

    def _succeeded(self, changes: Changes) -> Job:
        """The job as the SUCCEED transition with `changes` is about to commit it (the
        stores' own plan of that transition, applied here; from `running`, which the run holds
        it in: from `canceling` it writes the same)."""
        job = self.job
        plan = transition.plan(JobStatus.RUNNING, Event.SUCCEED, changes, time.time())
        return dataclasses.replace(
            transition.apply(job, plan), outputs=(*job.outputs, *changes.outputs)
        )

    async def _abandoned(self) -> None:
        """The run was cancelled from outside. Its prompt is left to run: the job's next
        attempt (this worker after a restart, or another one) finds it by prompt id and follows
        it instead of running the workflow again. On shutdown the job goes back to the queue at
        once; on a lost lease the store is not touched (another worker may hold the job)."""
        if self.abandon == "shutdown":
            await self._transition(
                Event.REQUEUE, Changes(backend=self.backend.name, prompt_id=self.prompt_id)
            )
        elif self.abandon == "unstored" and self.prompt_id is not None and self.client is not None:
            async with asyncio.timeout(self.ctx.settings.submit_timeout_s):
                await self.client.delete_queued([self.prompt_id])
                await self.client.interrupt(self.prompt_id)

    def _extra(self, action: str, **more: Any) -> dict[str, Any]:
        return {"action": action, "job_id": self.job.id, "backend": self.backend.name, **more}


def drop_unwritten(
    notes: Iterable[asyncio.TimerHandle | asyncio.Task[None]],
) -> list[asyncio.Task[None]]:
    """Drop the placement notes not yet due (timers); the ones being written, let finish
    (cancelled mid-way, a write's statement would be cancelled on the server)."""
    writing = []
    for note in notes:
        if not isinstance(note, asyncio.Task):  # a timer (uvloop's is not asyncio's class)
            note.cancel()
        elif not note.done():
            writing.append(note)
    return writing


async def settle_placement_notes(
    notes: Iterable[asyncio.TimerHandle | asyncio.Task[None]],
) -> None:
    """Drop the placement notes not yet due; wait for those being written (each catches the
    store's errors: a failing one only lags what the API shows)."""
    writing = drop_unwritten(notes)
    if writing:
        await asyncio.wait(writing)


__all__ = ["RunEnding", "drop_unwritten", "settle_placement_notes"]
