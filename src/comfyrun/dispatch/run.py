"""One job's life on one backend: place, submit, follow, collect, finish.

The run owns one claimed job and one slot on a backend. It submits the workflow under a prompt
id it mints (recorded in the job's event log before the prompt is sent, so that a later attempt
can reconcile it with ComfyUI's queue and history instead of running it twice), follows the
prompt's websocket events (progress, throttled), and waits for the first of: the prompt's
outcome, a cancel request (the store says `canceling`), the backend going down, or the job's
timeout. Every failure is classified (core.retry.FailureKind) and the retry policy decides
between `retry` and `fail`. A job only succeeds once all of its outputs are stored. How a run
ends (outcomes, failures, the final transition) is `RunEnding` (dispatch.run_end), mixed in,
its write to the store `EndCommit` (dispatch.end_commit); the adopting of an earlier attempt's
prompt is `RunAdoption` (dispatch.run_adopt), the following of its prompt `RunFollowing`
(dispatch.run_follow), the recording of where its prompt is and when it started `RunPlacement`
(dispatch.run_placement), all mixed in; what runs share is `RunContext` (dispatch.run_context).
A prompt's outcome is taken as ComfyUI tells it, before ComfyUI has finished the prompt: the
run's slot is given back only once it has (comfy.socket_events).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from comfyrun import stages
from comfyrun.backends.pool import Slot
from comfyrun.backends.slot import when_over
from comfyrun.comfy.errors import ComfyHTTPError, ComfyValidationError
from comfyrun.comfy.http import never_sent
from comfyrun.comfy.socket_events import prompt_end
from comfyrun.core.job import JSON, PARTIAL_TARGETS, Job, JobError, new_prompt_id
from comfyrun.core.queue_order import REFERENCE_COST, estimate_cost
from comfyrun.core.retry import FailureKind
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import CancelRequested, unless_canceled
from comfyrun.dispatch.collect import recached
from comfyrun.dispatch.end_commit import OutageOutlasted, log_outlasted
from comfyrun.dispatch.progress import ProgressTracker, ProgressWriter
from comfyrun.dispatch.reconcile import note_prompt, withdraw_prompt
from comfyrun.dispatch.relay import JobRelay, wants_relay
from comfyrun.dispatch.run_adopt import RunAdoption
from comfyrun.dispatch.run_context import UNSENT, InputPlacer, RunContext
from comfyrun.dispatch.run_follow import RunFollowing
from comfyrun.dispatch.stale_prompts import JOB_ID_KEY
from comfyrun.errors import BackendError, ComfyrunError
from comfyrun.store.base import Changes

log = logging.getLogger(__name__)


class JobRun(RunAdoption, RunFollowing):
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
        #: Set once the job ended here (succeeded, failed or canceled): what the backend's
        #: `jobs_done` counts (a run whose job went back to the queue is not).
        self.ended = False
        #: Resolved by `take_back` while the prompt is followed (_follow).
        self._taken_back_now: asyncio.Future[None] | None = None
        self._started_at: float | None = None  # when the prompt's first event came
        self._start_recorded = False
        #: The start, once seen, until a write of its own or the job's end records it.
        self._start_unwritten: float | None = None
        #: Placement writes that wait to see whether they are needed (see _note_later).
        self._placement_notes: set[asyncio.TimerHandle | asyncio.Task[None]] = set()
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
        except OutageOutlasted as exc:  # writing more would fail too; the lease runs out
            log_outlasted(log, self.job.id, exc, self._extra("run_error"))
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
            for note in self._placement_notes:
                note.cancel()
            # the backend is the run's until ComfyUI has finished its prompt (a success is told
            # before: comfy.socket_events)
            done = done and self.ended and not self.taken_back
            over = prompt_end(self.client, self.prompt_id)
            when_over(over, functools.partial(self.slot.release, done=done))

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
        if self._taken_back_now is not None and not self._taken_back_now.done():
            self._taken_back_now.set_result(None)
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
                    workflow, cleanup = await self._place(self.ctx.place_inputs)
                except CancelRequested:  # before its prompt existed: nothing to stop
                    await self._transition(Event.CANCELED, Changes(backend=backend.name))
                    return
                except ComfyHTTPError as exc:
                    if not 400 <= exc.status < 500:
                        await self._backend_lost(f"placing inputs failed: {exc.message}")
                        return
                    # ComfyUI answered and refused the input (413: over its upload limit): the
                    # job's to fail, as a retry would be refused alike; the backend is fine
                    await self._finish_failure(
                        FailureKind.INPUT_ERROR,
                        JobError(
                            code="input_refused",
                            message=f"backend {backend.name} refused an input: {exc.message}",
                            details=exc.details,
                        ),
                    )
                    return
                except BackendError as exc:  # the upload failed on the backend's side
                    await self._backend_lost(f"placing inputs failed: {exc.message}")
                    return
                except ComfyrunError as exc:
                    await self._finish_failure(
                        FailureKind.INPUT_ERROR,
                        JobError(code=exc.code, message=exc.message, details=exc.details),
                    )
                    return
            await self._submit_and_follow(recached(workflow, job))
        finally:
            if cleanup is not None:
                with contextlib.suppress(Exception):
                    await cleanup()

    async def _place(self, place: InputPlacer) -> tuple[JSON, Callable[[], Awaitable[None]]]:
        """The job's inputs and model files placed on the backend. Fetching them may take long
        (an hour, for a model URL that answers slowly) before any prompt is followed: a job
        that brings some is watched for a cancel meanwhile (CancelRequested)."""
        job = self.job
        placing = place(job, self.backend, self.client)
        if not job.inputs and not job.options.get("models"):
            return await placing

        async def drop(placed: tuple[JSON, Callable[[], Awaitable[None]]]) -> None:
            await placed[1]()

        return await unless_canceled(
            placing, self.ctx.store, job.id, self.ctx.settings, dropped=drop
        )

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
                stages.mark(self.job.id, "sending")
                try:
                    async with asyncio.timeout(settings.submit_timeout_s):
                        await client.submit(
                            workflow,
                            prompt_id=prompt_id,
                            extra_data=backend_extra_data(self.job),
                            partial_execution_targets=self.job.options.get(PARTIAL_TARGETS),
                        )
                except ComfyValidationError as exc:
                    await self._finish_failure(
                        FailureKind.VALIDATION,
                        JobError(code="invalid_workflow", message=exc.message, details=exc.details),
                    )
                    return
                except (BackendError, TimeoutError) as exc:
                    # (asyncio's timeout says nothing of itself)
                    why = str(exc) or f"no answer within {settings.submit_timeout_s:g} s"
                    message = f"backend {self.backend.name}: POST /prompt could not be sent: {why}"
                    unsent = JobError(code=UNSENT, message=message)
                    if not (never_sent(exc) and await self._requeue_unsent(unsent)):
                        await self._backend_lost(f"POST /prompt failed: {why}")
                    return
                self.slot.hold(True)  # in ComfyUI's queue until its first event says it started
                self.slot.submitted()
                self._note_later(None)
            stages.mark(self.job.id, "submitted")
            self._watch = watch
            await self._follow(watch)
        finally:
            with contextlib.suppress(Exception):
                watch.close()


def backend_extra_data(job: Job) -> JSON:
    """The `extra_data` a job's prompt is sent with: the client's own (ComfyUI's editor puts its
    workflow there, `extra_pnginfo`, which SaveImage writes into each PNG so that the image
    opens as its workflow again; it was dropped), without the client id comfyrun keeps (the
    backend's messages go to comfyrun's socket), and the job's id."""
    given = job.options.get("extra_data")
    extra: JSON = dict(given) if isinstance(given, dict) else {}
    extra.pop("client_id", None)
    extra[JOB_ID_KEY] = job.id
    return extra


__all__ = ["InputPlacer", "JobRun", "RunContext"]
