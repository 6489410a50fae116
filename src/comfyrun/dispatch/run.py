"""One job's life on one backend: place, submit, follow, collect, finish.

The run owns one claimed job and one slot on a backend. It submits the workflow under a prompt
id it mints (recorded in the job's event log before the prompt is sent, so that a later attempt
can reconcile it with ComfyUI's queue and history instead of running it twice), follows the
prompt's websocket events (progress, throttled), and waits for the first of: the prompt's
outcome, a cancel request (the store says `canceling`), the backend going down, or the job's
timeout. Every failure is classified (core.retry.FailureKind) and the retry policy decides
between `retry` and `fail`. A job only succeeds once all of its outputs are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from comfyrun import stages
from comfyrun.backends.pool import Backend, BackendPool, Slot
from comfyrun.comfy import messages as m
from comfyrun.comfy.errors import (
    ComfyExecutionError,
    ComfyValidationError,
)
from comfyrun.comfy.http import never_sent
from comfyrun.comfy.result import PromptResult
from comfyrun.core.job import ACTIVE, JSON, Job, JobError, Progress, new_prompt_id
from comfyrun.core.queue_order import REFERENCE_COST, estimate_cost
from comfyrun.core.retry import FailureKind, decide
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import wait_cancel_requested
from comfyrun.dispatch.chain import ChainFailure, chain_outputs
from comfyrun.dispatch.collect import collect_outputs
from comfyrun.dispatch.progress import ProgressTracker, ProgressWriter, preview_event
from comfyrun.dispatch.reconcile import (
    note_prompt,
    previous_prompt,
    still_known,
    stop_prompt,
    withdraw_prompt,
)
from comfyrun.dispatch.relay import JobRelay, RelayHub, wants_relay
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.errors import BackendError, ComfyrunError, Conflict, IllegalTransition
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import Changes, JobStore

log = logging.getLogger(__name__)

#: Places a job's inputs on a backend and returns the workflow to submit, plus a clean-up to run
#: once the job is done (e.g. removing files written into a managed backend's input folder).
InputPlacer = Callable[[Job, Backend, Any], Awaitable[tuple[JSON, Callable[[], Awaitable[None]]]]]


#: The error of a try whose prompt never reached ComfyUI (see JobRun._requeue_unsent).
UNSENT = "backend_unavailable"


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every run of one dispatcher shares."""

    store: JobStore
    pool: BackendPool
    storage: OutputStorage
    settings: DispatchSettings
    worker_id: str
    place_inputs: InputPlacer | None = None
    #: Told when this worker put a job back in the queue to run again at a given time, so that
    #: the claim loop wakes for it instead of waiting for its idle timeout.
    on_retry: Callable[[float], None] | None = None
    #: The live relay of ComfyUI messages (dispatch.relay): to an API in this process, and/or
    #: through the store to API nodes elsewhere.
    relay_hub: RelayHub | None = None
    relay_to_store: bool = False
    #: Runs the follow-up steps (`then`) of a job on its outputs (dispatch.chain).
    handlers: HandlerRegistry | None = None
    #: Told each job whose run here ended, as its final transition committed it (an API in
    #: this process keeps it at hand: JobService.remember).
    finished: list[Callable[[Job], None]] = dataclasses.field(default_factory=list)
    #: Told the id of each job whose run here is over, whether it settled the job or gave it
    #: back (its `?wait`s in this process stop waiting on the run: JobService.run_over).
    run_over: list[Callable[[str], None]] = dataclasses.field(default_factory=list)


class JobRun:
    """Runs `job` on the slot's backend. `run()` never raises except on cancellation."""

    def __init__(
        self, ctx: RunContext, job: Job, slot: Slot, *, noted_prompt: str | None = None
    ) -> None:
        self.ctx = ctx
        #: The prompt id the claim already recorded for this attempt (see first_attempt_note).
        self.noted_prompt = noted_prompt
        self.job = job
        self.slot = slot
        self.backend = slot.backend
        self.client: Any = None
        self.prompt_id: str | None = None
        #: Set by the dispatcher before it cancels the run: "shutdown" requeues the job,
        #: "lease_lost" leaves the store alone (another worker may hold the job now); neither
        #: stops the prompt, which the next attempt adopts by its prompt id. "unstored": the
        #: job's enqueue did not commit (dispatch.handoff): its prompt is stopped.
        self.abandon: str | None = None
        #: True once the job left running/canceling (or is no longer ours): nothing to renew.
        self.settled = False
        #: Set once the prompt was taken back from ComfyUI's queue before it started: the run
        #: ends without touching the store, and the dispatcher runs the job elsewhere.
        self.taken_back = False
        self._take_back = asyncio.Event()
        self._started_at: float | None = None  # when the prompt's first event came
        self._start_recorded = False
        #: The start, once seen, until a write of its own or the job's end records it.
        self._start_unwritten: float | None = None
        #: Placement writes that wait to see whether they are needed (see _note_later).
        self._placement_notes: set[asyncio.Task[None]] = set()
        self._progress = ProgressWriter(ctx.store, job.id, ctx.settings.progress_interval_s)
        relayed = wants_relay(job.metadata)  # a ComfyUI client waits for its messages
        self._relay = JobRelay(
            job.id,
            hub=ctx.relay_hub if relayed else None,
            store=ctx.store if relayed and ctx.relay_to_store else None,
            interval_s=ctx.settings.progress_interval_s,
        )
        self._tracker = ProgressTracker(job.workflow)
        self._cost = estimate_cost(job.workflow)
        self._watch: Any = None

    @property
    def remaining_cost(self) -> float:
        """The estimated cost of this run's prompt still to run (core.queue_order units)."""
        cost = REFERENCE_COST if self._cost is None else self._cost
        return cost * max(0.0, 1.0 - self._tracker.snapshot.value)

    # --- the whole run -----------------------------------------------------------------------
    async def run(self) -> None:
        done = False
        try:
            await self._run()
            done = True
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.ctx.settings.stop_grace_s):
                    await self._abandoned()
            raise
        except Exception as exc:  # a bug or a failing store must not leave the job running
            log.exception("job %s: run failed", self.job.id, extra=self._extra("run_error"))
            with contextlib.suppress(Exception):
                await self._finish_failure(
                    FailureKind.BACKEND_LOST,
                    JobError(code="internal_error", message=f"{type(exc).__name__}: {exc}"),
                )
        finally:
            self._progress.close()
            self._relay.close()
            for task in self._placement_notes:
                task.cancel()
            self.slot.release(done=done and not self.taken_back)

    async def take_back(self) -> bool:
        """Delete this run's prompt from ComfyUI's queue if it has not started. True when it is
        gone for good (never ran, never will): the run then ends without touching the store and
        the job may run elsewhere. A prompt that started (or whose fate cannot be told) stays."""
        if not self.slot.held or self.prompt_id is None or self.taken_back:
            return False
        gone = await withdraw_prompt(
            self.client, self.prompt_id, timeout_s=self.ctx.settings.submit_timeout_s
        )
        if not gone:
            self.slot.hold(False)  # it started meanwhile: it runs here
            return False
        self.taken_back = True
        self._take_back.set()
        log.info(
            "job %s: prompt %s taken back from backend %s before it started",
            self.job.id,
            self.prompt_id,
            self.backend.name,
            extra=self._extra("job_taken_back"),
        )
        return True

    async def _run(self) -> None:
        job, backend = self.job, self.backend
        log.info(
            "job %s claimed for backend %s (attempt %d)",
            job.id,
            backend.name,
            job.attempts,
            extra=self._extra("job_claimed", status=job.status.value),
        )
        try:
            self.client = await backend.ready_client()
        except BackendError as exc:
            error = JobError(code=UNSENT, message=f"backend {backend.name}: {exc.message}")
            if not await self._requeue_unsent(error):
                kind = FailureKind.CRASH if backend.managed else FailureKind.BACKEND_LOST
                await self._finish_failure(kind, error)
            return
        cleanup: Callable[[], Awaitable[None]] | None = None
        try:
            workflow = job.workflow
            if self.ctx.place_inputs is not None:
                try:
                    workflow, cleanup = await self.ctx.place_inputs(job, backend, self.client)
                except BackendError as exc:  # the upload failed on the backend's side
                    await self._backend_lost(f"placing inputs failed: {exc.message}")
                    return
                except ComfyrunError as exc:
                    await self._finish_failure(
                        FailureKind.INPUT_ERROR,
                        JobError(code=exc.code, message=exc.message, details=exc.details),
                    )
                    return
            await self._submit_and_follow(workflow)
        finally:
            if cleanup is not None:
                with contextlib.suppress(Exception):
                    await cleanup()

    # --- submit and follow -------------------------------------------------------------------
    async def _submit_and_follow(self, workflow: JSON) -> None:
        client, settings = self.client, self.ctx.settings
        adopted = await self._adopt_previous()
        if adopted is not None:
            prompt_id, watch = adopted
            self.prompt_id = prompt_id
            await self._adopted_state(prompt_id)
        else:
            prompt_id = self.noted_prompt or new_prompt_id()
            watch = client.watch(prompt_id)
        self.prompt_id = prompt_id
        try:
            if adopted is None:
                if prompt_id != self.noted_prompt:
                    await note_prompt(self.ctx.store, self.job, self.backend.name, prompt_id)
                try:
                    async with asyncio.timeout(settings.submit_timeout_s):
                        await client.submit(
                            workflow,
                            prompt_id=prompt_id,
                            extra_data={"comfyrun_job_id": self.job.id},
                        )
                except ComfyValidationError as exc:
                    await self._finish_failure(
                        FailureKind.VALIDATION,
                        JobError(code="invalid_workflow", message=exc.message, details=exc.details),
                    )
                    return
                except (BackendError, TimeoutError) as exc:
                    message = f"backend {self.backend.name}: POST /prompt could not be sent: {exc}"
                    unsent = JobError(code=UNSENT, message=message)
                    if not (never_sent(exc) and await self._requeue_unsent(unsent)):
                        await self._backend_lost(f"POST /prompt failed: {exc}")
                    return
                self.slot.hold(True)  # in ComfyUI's queue until its first event says it started
                self._note_later(None)
            stages.mark(self.job.id, "submitted")
            self._watch = watch
            await self._follow(watch)
        finally:
            with contextlib.suppress(Exception):
                watch.close()

    async def _follow(self, watch: Any) -> None:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        result = asyncio.ensure_future(watch.result())
        helpers = {
            "events": asyncio.ensure_future(self._consume(watch, started)),
            "cancel": asyncio.ensure_future(self._wait_cancel_requested()),
            "down": asyncio.ensure_future(self.backend.wait_down()),
            "start": asyncio.ensure_future(started.wait()),
            "take_back": asyncio.ensure_future(self._take_back.wait()),
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
                    self._take_the_rest()
                    outcome = await self._result_of(result)
                    self.slot.executed_prompt()
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
                    await self._backend_lost(self.backend.last_error or "backend is down")
                    return
                if not done:
                    await self._on_timeout(result, limit or 0.0)
                    return
        finally:
            tasks = (*helpers.values(), result)
            for task in tasks:
                task.cancel()
            # bounded: a helper blocked in a store call that swallows cancellation must not keep
            # the job (and its slot) from finishing
            await asyncio.wait(tasks, timeout=0.5)

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
        oom = err.out_of_memory
        error = JobError(
            code="out_of_memory" if oom else "node_execution_error",
            message=err.message,
            node_id=err.node_id,
            class_type=err.node_type,
            traceback=err.traceback,
            details={"exception_type": err.exception_type, "prompt_id": err.prompt_id},
        )
        await self._finish_failure(
            FailureKind.OUT_OF_MEMORY if oom else FailureKind.NODE_ERROR, error
        )

    async def _on_cancel(self, result: asyncio.Future[Any]) -> None:
        outcome, gone = await self._stop_prompt(result, self.ctx.settings.cancel_grace_s)
        if isinstance(outcome, PromptResult) and outcome.ok:
            await self._succeed(outcome)  # it finished before the interrupt landed
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
        for task in self._placement_notes:
            task.cancel()  # a start supersedes the held note
        task = asyncio.ensure_future(self._note_after(started_at))
        self._placement_notes = {task}

    async def _note_after(self, started_at: float | None) -> None:
        await asyncio.sleep(self.ctx.settings.placement_note_after_s)
        if self.settled or (started_at is None and self._start_recorded):
            return
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

    # --- adopting a prompt from an earlier attempt ------------------------------------------
    async def _adopt_previous(self) -> tuple[str, Any] | None:
        """If an earlier attempt of this job left a prompt on this backend that ComfyUI still
        holds (or finished well), follow that prompt instead of running the workflow again."""
        if self.job.attempts <= 1:
            return None
        previous = await previous_prompt(self.ctx.store, self.job.id)
        if previous is None:
            return None
        pid, name = previous
        backend, client = self.backend, self.client
        if name != backend.name:
            # The prompt went to another backend of this worker: follow it there (this run's
            # slot stays where it was reserved) rather than run the workflow a second time.
            other = self.ctx.pool.get(name)
            if other is None or other.is_down:
                return None
            try:
                client = await other.ready_client()
            except BackendError:
                return None
            backend = other
        if not await still_known(client, pid, timeout_s=self.ctx.settings.submit_timeout_s):
            return None
        try:
            watch = client.watch(pid, attach=True)
        except ValueError:  # still watched by the attempt that is being given up
            return None
        self.backend, self.client = backend, client
        log.info(
            "job %s: following prompt %s of an earlier attempt",
            self.job.id,
            pid,
            extra=self._extra("job_reconciled"),
        )
        return pid, watch

    # --- progress ---------------------------------------------------------------------------
    async def _consume(self, watch: Any, started: asyncio.Event) -> None:
        async for message in watch:
            self._on_message(message, started)

    def _take_the_rest(self) -> None:
        """Handle the messages the prompt's events task has not taken yet (the prompt's end
        may settle its result before that task runs again)."""
        if self._watch is not None:
            for message in self._watch.drain():
                self._on_message(message, None)

    def _on_message(self, message: Any, started: asyncio.Event | None) -> None:
        starts = m.ExecutionStart | m.ExecutionCached | m.Executing | m.Progress
        if isinstance(message, starts) and self._started_at is None:
            self._started_at = time.time()
        if started is not None and isinstance(message, starts):
            started.set()
        self._relay.feed(message)
        snapshot = self._tracker.feed(message)
        if snapshot is not None:
            self._progress.progress(snapshot)
        if isinstance(message, m.PreviewImageWithMetadata | m.PreviewImage):
            self._progress.preview(preview_event(message))

    async def _wait_cancel_requested(self) -> None:
        await wait_cancel_requested(self.ctx.store, self.job.id, self.ctx.settings)

    # --- endings ----------------------------------------------------------------------------
    async def _succeed(self, outcome: PromptResult) -> None:
        try:
            outputs = await collect_outputs(
                self.job,
                outcome.outputs,
                backend=self.backend,
                client=self.client,
                storage=self.ctx.storage,
                inline_cap=self.ctx.settings.inline_max_bytes,
            )
        except BackendError as exc:
            await self._backend_lost(f"reading outputs failed: {exc}")
            return
        except ComfyrunError as exc:
            await self._finish_failure(
                FailureKind.BACKEND_LOST,
                JobError(code=exc.code, message=f"storing outputs failed: {exc.message}"),
                retry=False,
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
        await self._transition(
            Event.SUCCEED,
            Changes(
                progress=Progress(value=1.0, nodes_done=total, nodes_total=total),
                backend=self.backend.name,
                prompt_id=self.prompt_id,
                expires_at=time.time() + self.ctx.settings.retention_s,
                outputs=tuple(outputs),
            ),
        )

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
        log.warning(
            "job %s back in the queue, not tried: %s",
            self.job.id,
            error.message,
            extra=self._extra("job_requeued"),
        )
        if self.ctx.on_retry is not None:
            self.ctx.on_retry(time.time())
        await self._transition(
            Event.REQUEUE,
            Changes(error=error, backend=self.backend.name, uncount_attempt=True),
        )
        return True

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
        store = self.ctx.store
        self._progress.close()  # a final transition: no progress write may follow it
        # the prompt's end reaches ComfyUI clients only when the job ends with this transition
        self._take_the_rest()
        await self._relay.finish(release=event in (Event.SUCCEED, Event.FAIL, Event.CANCELED))
        for task in self._placement_notes:
            task.cancel()  # what they would write goes with this transition
        self._placement_notes = set()
        if event in (Event.SUCCEED, Event.FAIL, Event.CANCELED) and self._start_unwritten:
            changes = dataclasses.replace(changes, execution_started_at=self._start_unwritten)
        # First as if nothing moved (one round trip); when the job moved (canceling), read it.
        current: Job | None = self.job
        stale = True  # the first try assumes the status this run last saw
        for _ in range(5):
            if current is None:
                current = await store.get(self.job.id)
                stale = False
            if (
                current is None
                or current.status not in ACTIVE
                or current.worker_id != self.ctx.worker_id
            ):
                self.settled = True
                log.warning(
                    "job %s is no longer held by this worker; %s dropped",
                    self.job.id,
                    event.value,
                    extra=self._extra("job_lost"),
                )
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
            stages.mark(job.id, "committed")
            log.info(
                "job %s %s on backend %s",
                job.id,
                job.status.value,
                self.backend.name,
                extra=self._extra(f"job_{event.value}", status=job.status.value),
            )
            self.job = job
            self.settled = job.status not in ACTIVE
            if job.terminal:
                self._relay.settled(job)
                for tell in self.ctx.finished:
                    tell(job)
            return job
        return None

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


__all__ = ["InputPlacer", "JobRun", "RunContext"]
