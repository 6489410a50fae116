"""The job service: the one layer every edge (HTTP routers, CLI, compatibility APIs) calls.

It talks to the dispatcher only through the store: submitting enqueues, canceling applies the
CANCEL transition (queued → canceled, running → canceling; the worker holding the job interrupts
it), and progress arrives as store events. So API nodes and workers can be separate processes
that share one database. Waiting for a job and following its events: comfyrun.job_watch;
canceling, deleting, counting and cleaning up: comfyrun.job_admin; replacing a finished job with
a new one of its id: comfyrun.job_replace.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from comfyrun import stages
from comfyrun.config import Settings
from comfyrun.core.batch import Batch, NewBatch
from comfyrun.core.ids import MAX_CHOSEN_ID_CHARS, chosen_id_problem
from comfyrun.core.job import COMFY, JSON, PARTIAL_TARGETS, Job, JobStatus, NewJob
from comfyrun.core.queue_order import estimate_cost, head_start
from comfyrun.errors import (
    IdempotencyInFlight,
    InvalidRequest,
    NotFound,
)
from comfyrun.finished import FinishedJobs
from comfyrun.handlers.admission import JobTypes
from comfyrun.job_admin import CleanupResult, FileDeleter, JobAdmin, Stats
from comfyrun.job_listing import filtered_page, metadata_filter
from comfyrun.job_replace import JobReplace
from comfyrun.job_watch import TERMINAL_NAMES, JobView, JobWatch
from comfyrun.models.specs import ModelRef, parse_models
from comfyrun.prompt_checks import has_asset_refs, refuse_unstorable
from comfyrun.queue_bound import QueueBound
from comfyrun.queue_remaining import RemainingCount
from comfyrun.store.base import HandOff, JobPage, JobStamp, JobStore
from comfyrun.submission import Submission, Submitted
from comfyrun.workflow_gate import CatalogSource, ObjectInfoSource, WorkflowGate, is_ui_format

log = logging.getLogger(__name__)


class Reservation(Protocol):
    """An idle backend of this process's worker held for one submission
    (comfyrun.dispatch.handoff)."""

    hand_off: HandOff

    async def taken(self, job: Job | None) -> None: ...

    async def withdraw(self, taking: asyncio.Task[None]) -> None: ...

    def release(self) -> None: ...


#: `offer(job_type)` → a Reservation when this process's worker would run such a job at once.
HandOffSource = Callable[[str], Reservation | None]


#: Checks a submission's `inputs`, asset references and model files before it is queued; may
#: return a rewritten workflow. Raises InputRejected / MissingAsset.
InputChecker = Callable[[JSON, Sequence[JSON], Sequence[ModelRef]], Awaitable[JSON]]


class JobService(JobReplace, JobAdmin, JobWatch):
    """Submit, observe, cancel and clean up jobs. Holds no job state of its own."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        files: FileDeleter | None = None,
        object_info: ObjectInfoSource | None = None,
        recheck_object_info: ObjectInfoSource | None = None,
        check_inputs: InputChecker | None = None,
        catalogs: CatalogSource | None = None,
        clock: Callable[[], float] = time.time,
        job_types: JobTypes | None = None,
        hand_off: HandOffSource | None = None,
        runs_here: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self._hand_off = hand_off
        #: jobs seen finished lately, and the word of this process's runs (comfyrun.finished):
        #: shared with the views `using` makes
        self.finished = FinishedJobs(runs_here)
        # with runs here, a wait begun on a queued job switches to the run's word at its claim
        self._ending_only = runs_here is None
        self.settings = settings
        self.job_types = job_types or JobTypes(
            queue_unserved=settings.queue_unserved_types, heartbeat_s=settings.heartbeat_s
        )
        self._files = files
        #: the checks a ComfyUI workflow passes before it is queued
        self.gate = WorkflowGate(
            object_info=object_info, recheck_object_info=recheck_object_info, catalogs=catalogs
        )
        self._check_inputs = check_inputs
        self._clock = clock
        self._in_flight_keys: set[str] = set()
        #: chosen job ids being submitted here (comfyrun.job_replace)
        self._taking_ids: set[str] = set()
        self._key_scope = ""  # whose idempotency keys these are (see `using`)
        # each key's count of its jobs queued or running: shared with the views `using` makes
        self._remaining: dict[str, RemainingCount] = {}
        #: shared with the views `using` makes: the whole queue's, whoever's view submits
        self.queue_bound = QueueBound(
            settings.queue_max, settings.queue_full_retry_after_s, self._queued_count
        )

    def using(
        self, store: JobStore, *, check_inputs: InputChecker | None = None, owner: str = ""
    ) -> JobService:
        """This service over another view of the store (e.g. API key `owner`'s); the rest is
        shared."""
        other = copy.copy(self)
        other.store = store
        other._key_scope = owner
        if check_inputs is not None:
            other._check_inputs = check_inputs
        return other

    async def _queued_count(self) -> int:
        """The jobs queued, all of them (the store this service was made with, not a view's)."""
        counts = await self.store.counts(unfinished=True)
        return counts.get(JobStatus.QUEUED, 0)

    # submission -------------------------------------------------------------------------

    async def submit(self, sub: Submission) -> Submitted:
        """Validate, convert and enqueue. With an idempotency key, a replay returns the first
        job (created=False); a concurrent duplicate raises IdempotencyInFlight."""
        key = None if sub.idempotency_key is None else f"{self._key_scope}\0{sub.idempotency_key}"
        if key is not None:
            if key in self._in_flight_keys:
                raise IdempotencyInFlight(details={"retry_after_s": 1})
            self._in_flight_keys.add(key)
        try:
            return await self._submit(sub)
        finally:
            if key is not None:
                self._in_flight_keys.discard(key)

    async def _submit(self, sub: Submission) -> Submitted:
        if sub.job_id is not None and (problem := chosen_id_problem(sub.job_id)) is not None:
            raise InvalidRequest(problem, details={"prompt_id": sub.job_id[:MAX_CHOSEN_ID_CHARS]})
        sub, workflow = await self._checked(sub)
        validated = time.perf_counter()
        if sub.job_id is not None:  # (comfyrun.job_replace)
            return await self._enqueue_chosen(sub.job_id, sub, workflow, validated)
        await self.queue_bound.admit()
        return await self._enqueue(sub, workflow, validated)

    async def _checked(self, sub: Submission) -> tuple[Submission, JSON]:
        """A submission's checks, before anything is written: its type's admission, the
        workflow's (a comfy job's), its inputs'. The submission (normalised) and workflow."""
        if sub.type != COMFY or sub.params or "then" in sub.options:  # handlers.admission
            params, options = await self.job_types.admit(
                self.store, sub.type, sub.params, sub.options
            )
            sub = dataclasses.replace(sub, params=params, options=options)
        workflow: JSON = {}
        models: tuple[ModelRef, ...] = ()
        if sub.type == COMFY:
            sub, workflow, models = await self._comfy_workflow(sub)
        if self._check_inputs is not None and (sub.inputs or models or has_asset_refs(workflow)):
            workflow = await self._check_inputs(workflow, list(sub.inputs), models)
        return sub, workflow

    async def _enqueue(
        self,
        sub: Submission,
        workflow: JSON,
        validated: float,
        replacing: JobStamp | None = None,
    ) -> Submitted:
        """Store the submission's job (in place of the finished job `replacing` is the stamp
        of, when given: JobStore.enqueue)."""
        new = self._new_job(sub, workflow)
        reservation = self._hand_off(new.type) if self._hand_off is not None else None
        position: int | None = None
        if reservation is not None:
            # shielded: a claimed job is started even if the request goes away meanwhile
            job, created = await asyncio.shield(self._hand_over(new, reservation, replacing))
            # a job handed off is claimed already: no position to count
            if sub.want_position and job.status is JobStatus.QUEUED:
                position = await self._position(job)
        elif sub.want_position:  # counted in the enqueue's own transaction
            limit = self.settings.queue_position_cap
            job, created, position = await self.store.enqueue_counted(
                new, limit=limit, now=self._clock(), replacing=replacing
            )
            stages.mark(job.id, "enqueued")
        else:
            job, created = await self.store.enqueue(new, now=self._clock(), replacing=replacing)
            stages.mark(job.id, "enqueued")
        stages.mark_at(job.id, "validated", validated)
        if created:
            log.info(
                "job queued",
                extra={"action": "job_queued", "job_id": job.id, "priority": job.priority},
            )
        return Submitted(job=job, created=created, queue_position=position)

    async def _hand_over(
        self, new: NewJob, reservation: Reservation, replacing: JobStamp | None
    ) -> tuple[Job, bool]:
        """Enqueue `new`, claimed for the reserved backend when nothing else is queued, and
        start it there (the reservation is released otherwise). Where the store says what its
        transaction decided before it commits (HandOff.decided), the job starts then: its
        prompt goes to ComfyUI while the commit's fsync runs, and the submission is answered
        only after the commit as always. Should that commit fail, the run is withdrawn (and
        its prompt stopped): nothing was stored."""
        early: asyncio.Task[None] | None = None

        def decided(job: Job, created: bool) -> None:
            nonlocal early
            stages.mark(job.id, "decided")
            early = asyncio.ensure_future(reservation.taken(job if created else None))

        hand_off = dataclasses.replace(reservation.hand_off, decided=decided)
        try:
            job, created = await self.store.enqueue_claimed(
                new, hand_off, now=self._clock(), replacing=replacing
            )
        except BaseException:
            if early is None:
                reservation.release()
            else:
                await reservation.withdraw(early)
            raise
        stages.mark(job.id, "enqueued")
        if early is None:
            await reservation.taken(job if created else None)
        else:
            await early
        return job, created

    async def _comfy_workflow(
        self, sub: Submission
    ) -> tuple[Submission, JSON, tuple[ModelRef, ...]]:
        models = parse_models(sub.options.get("models"))
        if models:  # stored normalised; workers deliver them (comfyrun.dispatch.models)
            sub = dataclasses.replace(
                sub, options={**sub.options, "models": [m.to_json() for m in models]}
            )
        placeholders = bool(sub.inputs)
        fitting = await self.gate.fitting_backends(
            sub.workflow, sub.options.get("requirements"), placeholders=placeholders, models=models
        )
        workflow = await self.gate.prepare(
            sub.workflow,
            placeholders=placeholders,
            models=models,
            object_info=fitting,
            targets=sub.options.get(PARTIAL_TARGETS),
        )
        return sub, workflow, models

    async def submit_batch(self, batch: NewBatch, subs: Sequence[Submission]) -> Batch:
        """Enqueue `subs` as one batch, all or none. They differ only in values the caller has
        checked (a template's schema), so ComfyUI's full check runs on the first workflow and
        the others get their inputs checked."""
        if not subs:
            raise InvalidRequest("a batch needs at least one job")
        refuse_unstorable(batch_options=batch.options, batch_metadata=batch.metadata)
        first = subs[0]
        await self.gate.prepare(first.workflow, placeholders=bool(first.inputs))
        jobs = []
        for sub in subs:
            workflow = sub.workflow
            models = parse_models(sub.options.get("models"))
            if self._check_inputs is not None and (
                sub.inputs or models or has_asset_refs(workflow)
            ):
                workflow = await self._check_inputs(workflow, list(sub.inputs), models)
            jobs.append(self._new_job(sub, workflow))
        await self.queue_bound.admit(len(jobs))
        record = await self.store.create_batch(batch, jobs, now=self._clock())
        log.info(
            "batch queued",
            extra={"action": "batch_queued", "batch_id": record.id, "total": record.total},
        )
        return record

    def _new_job(self, sub: Submission, workflow: JSON) -> NewJob:
        refuse_unstorable(
            workflow=workflow,
            inputs=sub.inputs,
            options=sub.options,
            metadata=sub.metadata,
            params=sub.params,
        )
        return NewJob(
            workflow=workflow,
            priority=sub.priority,
            inputs=sub.inputs,
            options=sub.options,
            metadata=sub.metadata,
            owner=sub.owner,
            max_retries=(
                sub.max_retries
                if sub.max_retries is not None
                else self.settings.default_max_retries
            ),
            retry_delay_s=self.settings.retry_delay_s,
            timeout_s=sub.timeout_s
            if sub.timeout_s is not None
            else self.settings.default_timeout_s,
            idempotency_key=sub.idempotency_key,
            request_hash=sub.request_hash,
            type=sub.type,
            params=sub.params,
            # a handler job ranks at its submission (the type-led claim index relies on it)
            head_start_s=head_start(
                estimate_cost(workflow), self.settings.queue_order, self.settings.queue_aging_s
            )
            if sub.type == COMFY
            else 0.0,
            **({"id": sub.job_id} if sub.job_id is not None else {}),
        )

    # reading ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, position: bool = True) -> JobView:
        """The job, with its queue position while queued (unless not `position`); a job seen
        finished lately is not read again."""
        job = await self.job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
        queued = position and job.status is JobStatus.QUEUED
        return JobView(job, await self._position(job) if queued else None)

    async def _position(self, job: Job) -> int | None:
        """The queue position of `job` (as just read or enqueued), counted up to
        `queue_position_cap`."""
        return await self.store.queue_position(
            job.id, limit=self.settings.queue_position_cap, job=job
        )

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        metadata: Mapping[str, str] | None = None,
        where: Callable[[Job], bool] | None = None,
    ) -> JobPage:
        """Newest first, `limit` a page. `metadata` (values as a URL gives them, matched as
        comfyrun.job_listing.metadata_matches says) and `where` filter the jobs the store
        lists; such a page is filled from the store's next pages (comfyrun.job_listing)."""
        if metadata:
            by_metadata = metadata_filter(metadata)
            only = where
            where = by_metadata if only is None else lambda j: only(j) and by_metadata(j)
        try:
            if where is not None:
                return await filtered_page(
                    self.store,
                    statuses=statuses,
                    owner=owner,
                    limit=limit,
                    cursor=cursor,
                    where=where,
                )
            return await self.store.list(statuses=statuses, owner=owner, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise InvalidRequest(f"bad cursor: {exc}", details={"cursor": cursor}) from exc


__all__ = [
    "TERMINAL_NAMES",
    "CleanupResult",
    "InputChecker",
    "JobService",
    "JobView",
    "ObjectInfoSource",
    "Stats",
    "Submission",
    "Submitted",
    "is_ui_format",
]
