"""Replacing a finished job with a new one of its id (mixed into JobService, comfyrun.service):
RunPod's /retry (`run_again`) and a ComfyUI prompt_id used again (`Submission.replace_finished`).

The finished job is read, the new submission checked, and the store then deletes the old job
in the transaction that stores the new one, only while the old one is as it was read
(`JobStore.enqueue(..., replacing=stamp)`, comfyrun.store.replacing): a crash in between loses
neither, two replacements at once (on this API node or another sharing the database) queue the
job once, the other refused with Conflict, and a read of the job meanwhile, on any node, finds
the old one or the new one. The old job's output files go just before, one by one (not its
prefix: the new run's outputs share it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from comfyrun.core.job import JSON, Job
from comfyrun.errors import Conflict
from comfyrun.finished import FinishedJobs
from comfyrun.job_admin import FileDeleter
from comfyrun.outputs import job_prefix
from comfyrun.queue_bound import QueueBound
from comfyrun.store.base import JobStamp, JobStore
from comfyrun.submission import Submission, Submitted


class JobReplace(ABC):
    """Queueing a finished job again under its id (JobService sets these)."""

    store: JobStore
    finished: FinishedJobs
    queue_bound: QueueBound
    _files: FileDeleter | None
    #: chosen job ids being submitted here; shared with the views `using` makes
    _taking_ids: set[str]

    @abstractmethod
    async def _submit(self, sub: Submission) -> Submitted:
        """Check and enqueue `sub` (one of a chosen id: `_enqueue_chosen`)."""

    @abstractmethod
    async def _enqueue(
        self,
        sub: Submission,
        workflow: JSON,
        validated: float,
        replacing: JobStamp | None = None,
    ) -> Submitted:
        """Store the checked submission's job (in place of the finished job `replacing` is
        the stamp of, when given)."""

    async def _enqueue_chosen(
        self, job_id: str, sub: Submission, workflow: JSON, validated: float
    ) -> Submitted:
        """Enqueue checked submission `sub` of chosen id `job_id`, in place of a finished job
        of that id when it asks to replace one (`_make_room`). One submission of an id at a
        time here: a second at once is refused (Conflict) before the queue's bound counts it
        in; the store refuses the second of two replacements made at once on two nodes."""
        if job_id in self._taking_ids:
            raise Conflict(
                f"job {job_id} is being submitted again already", details={"job_id": job_id}
            )
        self._taking_ids.add(job_id)
        try:
            await self.queue_bound.admit()
            existing = await self._make_room(job_id, replace=sub.replace_finished)
            replacing = None if existing is None else JobStamp.of(existing)
            if existing is not None:
                await self._delete_outputs(existing)
            try:
                return await self._enqueue(sub, workflow, validated, replacing)
            finally:
                if replacing is not None:  # (replaced or not: kept, it may be stale now)
                    self.finished.forget(job_id)
        finally:
            self._taking_ids.discard(job_id)

    async def run_again(self, job: Job) -> Submitted:
        """Queue finished `job` again under its id, as it was submitted (its type, params,
        inputs and options): checked first as a new submission is, so that one that cannot be
        queued again (a workflow no backend takes now, a full queue) raises and leaves the job
        as it was; only then is the old one replaced (`replace_finished`)."""
        sub = Submission(
            workflow=job.workflow,
            priority=job.priority,
            inputs=job.inputs,
            options=job.options,
            metadata=job.metadata,
            owner=job.owner,
            max_retries=job.max_retries,
            timeout_s=job.timeout_s,
            job_id=job.id,
            type=job.type,
            params=job.params,
            replace_finished=True,
        )
        return await self._submit(sub)

    async def _make_room(self, job_id: str, *, replace: bool) -> Job | None:
        """Raise Conflict if job `job_id` exists, unless `replace` and it is finished: then it
        as read now, for the enqueue that replaces it (None: there is no such job)."""
        existing = await self.store.get(job_id)
        if existing is None:
            return None
        if not replace:
            raise Conflict(f"job {job_id} already exists", details={"job_id": job_id})
        if not existing.terminal:
            raise Conflict(
                f"job {job_id} is still {existing.status.value}", details={"job_id": job_id}
            )
        return existing

    async def _delete_outputs(self, job: Job) -> None:
        """Before finished `job` is replaced: the output files it lists are deleted, one by
        one, not its whole prefix, which the new run's outputs share: after the swap, a run
        handed straight to a backend could have stored them already, and a node whose
        replacement is then refused (another replaced the job first) would delete the
        winner's. A storage that fails raises: nothing is replaced. (Files of the job it
        never listed stay until the new job's are deleted with its prefix.)"""
        if self._files is None:
            return
        prefix = job_prefix(job.id)
        for output in job.outputs:
            key = output.storage_key
            if key is not None and key.startswith(prefix):  # (not an asset's shared blob)
                await self._files.delete(key)


__all__ = ["JobReplace"]
