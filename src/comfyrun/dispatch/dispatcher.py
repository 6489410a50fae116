"""The dispatcher: claims jobs for free backend slots and runs each one (dispatch.run).

One loop: when some backend has room, claim the best queued job for it and start a run (the
claim a task of its own: while claims find jobs, several are in flight at once, one for each
free slot); then wait for the first of a change in the pool (a slot freed, a prompt started) or
the store's "new work" wake-up. A backend may hold one prompt in ComfyUI's queue behind the one
it runs (more when its prompts are short: core.pipeline), so the next job is already there when
the current one ends, but late-bound
(core.placement): only when no idle backend could take it, never behind a held prompt of higher
priority, taken back when another backend falls idle first or a job of higher priority arrives.
A job goes only to a backend that can run it (core.fit); one that fits only busy backends is
parked (claimed, not placed) until one of them has room (dispatch.placing). Held prompts move as
the fleet changes (dispatch.rebalance). Beside the loop: a heartbeat that renews the lease of
every held job (and gives up a job whose lease was lost) and the sweeper (dispatch.sweeper).

The API never calls the dispatcher: it talks to it only through the store (enqueue; cancel moves
a running job to `canceling`, which its run notices), so API nodes and workers can be separate
processes sharing one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

from comfyrun import stages
from comfyrun.backends.pool import BackendPool, Slot
from comfyrun.core.job import COMFY, Job, JobError, JobStatus, new_prompt_id
from comfyrun.core.placement import (
    may_hold,
)
from comfyrun.core.state import Event
from comfyrun.dispatch.claim_wake import ClaimWake
from comfyrun.dispatch.fitting import FleetFit
from comfyrun.dispatch.handoff import Reservation
from comfyrun.dispatch.inputs import make_input_placer
from comfyrun.dispatch.janitor import Janitor
from comfyrun.dispatch.placing import Placing
from comfyrun.dispatch.rebalance import PARK_PER_BACKEND, Rebalancing
from comfyrun.dispatch.reconcile import first_attempt_note
from comfyrun.dispatch.relay import RelayHub
from comfyrun.dispatch.retry_clock import RetryClock
from comfyrun.dispatch.routing import ModelRouter
from comfyrun.dispatch.run import InputPlacer, JobRun, RunContext
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.dispatch.staging_claims import StagingClaims
from comfyrun.dispatch.stale import release_stale_jobs
from comfyrun.dispatch.stale_prompts import ReturnCheck
from comfyrun.dispatch.sweeper import Sweeper
from comfyrun.errors import ComfyrunError
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.models import ModelCache
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import Changes, HandOff, JobStore

log = logging.getLogger(__name__)

#: Claims one dispatcher has in flight at most (one for each free slot) while claims find jobs,
#: unless its store says otherwise (`claims_at_once`: SQLite commits the claims in flight in one
#: transaction, so a fleet of short prompts, with several free slots a backend (core.pipeline),
#: takes 16; on PostgreSQL each is a statement on a pooled connection (10 a process), and a
#: claim beyond the worker's staging places (max_staging_jobs, 4) chooses among a window, five
#: round trips where the head's claim is one).
CLAIMS_AT_ONCE = 4
#: How long claiming waits after a claim failed (the store failing).
CLAIM_ERROR_PAUSE_S = 1.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher(Placing, Rebalancing, StagingClaims):
    """Runs queued jobs on the pool's backends until stopped."""

    def __init__(
        self,
        store: JobStore,
        pool: BackendPool,
        storage: OutputStorage,
        settings: DispatchSettings | None = None,
        *,
        worker_id: str | None = None,
        place_inputs: InputPlacer | None = None,
        relay_hub: RelayHub | None = None,
        relay_to_store: bool = False,
        handlers: HandlerRegistry | None = None,
        types: Sequence[str] = (COMFY,),
        models: ModelCache | None = None,
    ) -> None:
        self.settings = settings or DispatchSettings()
        #: The job types this dispatcher claims: ComfyUI workflows (handler jobs go to a lane).
        self.types = tuple(types)
        self.worker_id = worker_id or default_worker_id()
        self.store = store
        self.pool = pool
        # a backend found down comes back only once its prompts of jobs that moved on are gone
        pool.on_return = ReturnCheck(store, timeout_s=pool.health_settings.timeout_s)
        #: When jobs this worker put back (retries with backoff) become runnable.
        self._retries = RetryClock(self.settings.idle_wait_s)
        self.ctx = RunContext(
            store=store,
            pool=pool,
            storage=storage,
            settings=self.settings,
            worker_id=self.worker_id,
            place_inputs=place_inputs or make_input_placer(),
            on_retry=self._retries.note,
            relay_hub=relay_hub,
            relay_to_store=relay_to_store,
            handlers=handlers or HandlerRegistry.load(entry_points=False),
            janitor=Janitor() if self.settings.clean_backend_outputs else None,
        )
        #: The store's work token when a claim last found nothing (see JobStore.work_token).
        self._nothing_at: int | None = None
        #: Claims in a row that found a job: as many may be in flight at once (_start_claims),
        #: at least one, at most `_claims_at_once`.
        self._hits = 0
        #: The claims in flight (_start_claims), their slots, and when claiming may go on after
        #: one failed.
        self._claims: set[asyncio.Task[None]] = set()
        self._claims_at_once = int(getattr(store, "claims_at_once", CLAIMS_AT_ONCE))
        self._claiming: set[Slot] = set()
        self._claims_paused_until = 0.0
        #: What the claim loop waits for between passes.
        self._wake = ClaimWake(pool, store, self.types, self._retries.idle_timeout)
        self.sweeper = Sweeper(
            store, storage, interval_s=self.settings.sweep_interval_s, on_requeue=self._retries.note
        )

        self._runs: dict[str, tuple[JobRun, asyncio.Task[None]]] = {}
        #: Claimed jobs that fit only backends that are busy now, placed first when one frees.
        self._parked: dict[str, Job] = {}
        self.fit = FleetFit(pool, timeout_s=self.settings.submit_timeout_s)
        self.router = ModelRouter(
            enabled=self.settings.model_routing,
            window=self.settings.model_routing_window,
            max_overtake=self.settings.model_routing_max_overtake,
            keep=self.settings.models_kept,
        )
        self.staging = self._staging_for(models)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Give back jobs this worker id held before a restart, then start claiming."""
        await self._release_stale_jobs()
        await self.sweeper.sweep_once()
        with contextlib.suppress(Exception):  # what each backend can run, before the first job
            await self.fit.refresh()
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="dispatch:claim"),
            asyncio.create_task(self._heartbeat_loop(), name="dispatch:heartbeat"),
            asyncio.create_task(self.sweeper.run(), name="dispatch:sweeper"),
        ]
        log.info("dispatcher %s started", self.worker_id, extra={"action": "dispatcher_start"})

    async def stop(self, drain: bool = False) -> None:
        """Stop claiming. With `drain`, let the jobs in hand finish; otherwise put them back in
        the queue at once. Their prompts keep running in ComfyUI: the next attempt (after a
        restart, or on another worker with the same backend) follows them by prompt id."""
        self._stopping = True
        claim = self._tasks[0] if self._tasks else None
        if claim is not None:
            claim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claim
        if self._claims:  # a claim in flight ends: its job is parked, then given back
            _, late = await asyncio.wait(set(self._claims), timeout=self.settings.stop_grace_s)
            for left in late:
                left.cancel()
        await self._wake.close()
        if self.staging is not None:  # their downloads stop; back to the queue
            await self.staging.stop()
        for job_id in list(self._parked):  # never started: straight back to the queue
            self._parked.pop(job_id, None)
            with contextlib.suppress(ComfyrunError):
                await self.store.transition(
                    job_id,
                    Event.REQUEUE,
                    expect=JobStatus.RUNNING,
                    changes=Changes(clear_lease=True),
                    worker_id=self.worker_id,
                )
        if drain:
            await self.wait_idle()
        for run, task in list(self._runs.values()):
            run.abandon = "shutdown"
            task.cancel()
        tasks = [task for _, task in self._runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.stop_grace_s + 1.0)
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.ctx.janitor is not None:
            await self.ctx.janitor.close()
        log.info("dispatcher %s stopped", self.worker_id, extra={"action": "dispatcher_stop"})

    async def wait_idle(self) -> None:
        """Return when this dispatcher holds no job."""
        await self._idle.wait()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._runs)

    # --- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping:
            if self.pool.hopeless:
                await self._fail_unplaceable()
                continue
            generation = self.pool.generation
            # read first: work that comes while this pass finds nothing ends the wait below
            token = self.store.work_token(self.types)
            self.router.forget_down(self.pool.views)
            pause = self._claims_paused_until - asyncio.get_running_loop().time()
            if pause > 0:  # a claim failed: the store is failing, back off before trying again
                await asyncio.sleep(pause)
                continue
            try:
                await self.fit.refresh()
                if await self._rebalance() or await self._place_parked():
                    continue
                # claims started here wake the wait below as they start their jobs (the pool
                # changes); a pass meanwhile would find no room, and ask the store for nothing
                self._start_claims()
            except ComfyrunError as exc:
                log.warning("claim failed: %s", exc, extra={"action": "claim_error"})
                await asyncio.sleep(CLAIM_ERROR_PAUSE_S)  # the store is failing: back off
                continue
            if await self._wake.wait(generation, token):
                # new work, or the timeout that makes jobs waiting for their time runnable
                self._nothing_at = None

    def _start_claims(self) -> None:
        """Start claiming the best queued jobs for free slots, each claim a task of its own
        that starts its job: the loop does not wait for them. While claims find jobs, one for
        each free slot, as many in flight as the last claims found jobs in a row (at most
        `_claims_at_once`): SQLite commits the claims made meanwhile in one transaction, PostgreSQL
        runs them side by side. After a claim that found nothing (the queue may be empty), one
        at a time: a lone job still costs two claims (its own, and the next that finds nothing).

        Claimed one at a time, each waiting for the last's commit, a fleet whose queue was full
        had most of its slots free: each claim waited for the batch being committed, then for
        its own."""
        token = self.store.work_token(self.types)
        while len(self._claims) < min(self._claims_at_once, max(1, self._hits)):
            slot = self._reserve(token)
            if slot is None:
                break
            self._claiming.add(slot)
            claim = asyncio.create_task(self._claim_once(slot, token), name="dispatch:claim1")
            self._claims.add(claim)
            claim.add_done_callback(self._claimed)

    def _claimed(self, claim: asyncio.Task[None]) -> None:
        """A claim's task ended: a store that failed holds claims back a second (the loop
        waits for that before claiming again)."""
        self._claims.discard(claim)
        if claim.cancelled():
            return
        exc = claim.exception()
        if exc is None:
            return
        self._hits = 0
        self._claims_paused_until = asyncio.get_running_loop().time() + CLAIM_ERROR_PAUSE_S
        if isinstance(exc, ComfyrunError):
            log.warning("claim failed: %s", exc, extra={"action": "claim_error"})
        else:
            log.error("claim failed", exc_info=exc, extra={"action": "claim_error"})

    def _reserve(self, token: int | None) -> Slot | None:
        """A free slot to claim a job for, or None (no room, nothing claimable since the last
        claim found nothing, or as many jobs parked as may be)."""
        if len(self._parked) >= PARK_PER_BACKEND * max(1, len(self.pool.backends)):
            return None
        if token is not None and token == self._nothing_at:
            return None  # the last claim found nothing and nothing claimable came since
        return self.pool.try_reserve()

    async def _claim_for(self, slot: Slot, token: int | None, *, downloads: bool) -> None:
        """Claim the best queued job for `slot` and start it; give the slot back when there is
        no job, or the room is a hold behind a prompt of higher priority. Without `downloads`,
        no job that must download model files first (dispatch.staging_claims)."""
        holding = slot.backend.inflight > 1  # the job would wait behind one in ComfyUI's queue
        try:
            held = self.pool.held_prompts()
            if holding and held:
                head = await self.store.next_priority(types=self.types)
                if head is None or not may_hold(head, held):
                    slot.release()
                    return
            # the prompt a first attempt submits is noted in the claim's own transaction, for
            # the backend reserved here; placed elsewhere, the run notes a new one (_place)
            prompt_id = new_prompt_id()
            note = first_attempt_note(slot.backend.name, prompt_id)
            job = await self.store.claim(
                self.worker_id,
                self.settings.lease_s,
                note=note,
                choice=self._claim_choice(slot, downloads),
                types=self.types,
            )
        except BaseException:
            slot.release()
            raise
        finally:
            self._claiming.discard(slot)
        self._hits = 0 if job is None else self._hits + 1
        if job is None:
            self._nothing_at = token
            slot.release()
            if token is not None and self.store.work_token(self.types) != token:
                # work came while this claim was made: the pass it woke found this claim in
                # flight and started none, and no other wake-up is due (a burst's last jobs
                # waited for the idle timeout)
                self._wake.nudge()
            return
        if self._stopping:  # claimed as the dispatcher stops: given back with the parked jobs
            slot.release()
            self._parked[job.id] = job
            return
        await self.start_claimed(job, slot, prompt_id)

    async def start_claimed(self, job: Job, slot: Slot, prompt_id: str) -> None:
        """Start a job just claimed for `slot` (its first attempt's prompt id noted as
        `prompt_id`), or fail it when its start deadline passed."""
        if past_start_deadline(job, time.time()):
            slot.release()
            await self._fail_claimed(
                job,
                JobError(
                    code="queue_timeout",
                    message="the job was not started before its deadline (start_by); "
                    "it was not run",
                    details={"start_by": job.options.get("start_by")},
                ),
            )
            return
        stages.mark(job.id, "claimed")
        if self._stage(job, slot):  # its files download first, no backend held
            return
        await self._place(job, slot, noted=(slot.backend.name, prompt_id))

    def offer(self, job_type: str) -> Reservation | None:
        """A backend for a job of `job_type` being submitted in this process, when this
        dispatcher would claim it at once: it runs, serves the type, holds no job parked and
        no prompt waiting in a backend's queue, and a backend is idle (not merely with room in
        ComfyUI's queue). The submission enqueues with the reservation's `hand_off`
        (JobStore.enqueue_claimed), which claims the job in the enqueue's transaction when no
        other job is queued, then calls `taken`: one commit and one claim less per job."""
        if self._stopping or not self._tasks or self.pool.hopeless or self._parked:
            return None
        if self.staging is not None and self.staging.full:  # the job may need a download
            return None
        if self.types is not None and job_type not in self.types:
            return None
        if self.pool.held_prompts():
            return None
        slot = self.pool.try_reserve()
        if slot is None:
            return None
        if slot.backend.inflight > 1:  # it would wait behind another prompt
            slot.release()
            return None
        prompt_id = new_prompt_id()
        hand_off = HandOff(
            self.worker_id,
            self.settings.lease_s,
            note=first_attempt_note(slot.backend.name, prompt_id),
        )
        return Reservation(self, slot, prompt_id, hand_off)

    async def withdraw_unstored(self, job_id: str) -> None:
        """A handed-off job started before its enqueue committed, and the commit failed: end
        its run (stopping its prompt on ComfyUI) without touching the store."""
        self._parked.pop(job_id, None)
        if self.staging is not None:
            self.staging.abandon(job_id, "unstored")
        entry = self._runs.get(job_id)
        if entry is None:
            return
        run, task = entry
        run.abandon = "unstored"
        task.cancel()
        await asyncio.wait({task}, timeout=self.settings.stop_grace_s + 1)
        run.slot.release()  # a task cancelled before its first step never ran its `finally`

    def _start_run(
        self,
        job: Job,
        slot: Slot,
        *,
        noted_prompt: str | None = None,
        claimed: int | None = None,
    ) -> None:
        stale = self._runs.get(job.id)
        if stale is not None:  # our lease ran out and we claimed the job again: drop the old run
            stale[0].abandon = "lease_lost"
            stale[1].cancel()
        slot.bind(job.id, priority=job.priority, claimed=claimed)
        self.router.sent(slot.backend.name, job)
        run = JobRun(self.ctx, job, slot, noted_prompt=noted_prompt)
        task = asyncio.create_task(run.run(), name=f"job:{job.id}")
        self._runs[job.id] = (run, task)
        self._idle.clear()
        task.add_done_callback(functools.partial(self._run_done, job.id))
        for tell in self.ctx.run_started:
            tell(job.id)

    def _run_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        current = self._runs.get(job_id)
        if current is not None and current[1] is task:
            del self._runs[job_id]
            if self.staging is not None:  # its run pinned the files it staged for itself
                self.staging.release(job_id)
            for tell in self.ctx.run_over:
                tell(job_id)
        if not self._runs:
            self._idle.set()

    def running(self, job_id: str) -> bool:
        """Whether a run of this dispatcher holds the job now, staging included
        (RunContext.run_over tells when it no longer does)."""
        return job_id in self._runs or self._staging_holds(job_id)

    # --- leases ------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)  # a lease is renewed on a clock
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        """Renew the lease of every held job; give up (without touching the store) any job
        whose lease this worker lost: another worker may be running it now."""
        if self.staging is not None:
            await self.staging.renew()
        for job_id in list(self._parked):
            try:
                if not await self.store.renew(job_id, self.worker_id, self.settings.lease_s):
                    self._parked.pop(job_id, None)
                    if self.staging is not None:
                        self.staging.release(job_id)
            except ComfyrunError as exc:
                log.warning("renewing the lease of job %s failed: %s", job_id, exc)
        for job_id, (run, task) in list(self._runs.items()):
            if run.settled:
                continue
            try:
                held = await self.store.renew(job_id, self.worker_id, self.settings.lease_s)
            except ComfyrunError as exc:
                log.warning("renewing the lease of job %s failed: %s", job_id, exc)
                continue
            if not held and not task.done() and not run.settled:
                log.warning(
                    "job %s: lease lost; giving it up",
                    job_id,
                    extra={"action": "lease_lost", "job_id": job_id, "backend": run.backend.name},
                )
                run.abandon = "lease_lost"
                task.cancel()

    async def _release_stale_jobs(self) -> None:
        await release_stale_jobs(self.store, self.worker_id, self._runs)


def past_start_deadline(job: Job, now: float) -> bool:
    """A job may carry `options["start_by"]` (epoch seconds, e.g. RunPod's policy.ttl): past it,
    the job is failed (code queue_timeout) instead of being run late."""
    start_by = job.options.get("start_by")
    return isinstance(start_by, int | float) and not isinstance(start_by, bool) and now > start_by


__all__ = ["Dispatcher", "default_worker_id", "past_start_deadline"]
