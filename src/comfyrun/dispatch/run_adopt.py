"""A prompt of an earlier attempt adopted: when a job is tried again, the prompt its earlier
attempt left on a backend of this worker that ComfyUI still holds (or finished well) is followed
instead of running the workflow a second time. `RunAdoption` is mixed into `JobRun`
(dispatch.run), which sets what it reads.
"""

from __future__ import annotations

import logging
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.core.job import Job
from comfyrun.dispatch.end_commit import EndCommit
from comfyrun.dispatch.reconcile import previous_prompt, still_known
from comfyrun.dispatch.run_context import OUTPUT_MISSING, RunContext
from comfyrun.errors import BackendError

log = logging.getLogger("comfyrun.dispatch.run")


class RunAdoption(EndCommit):
    """The adopting of an earlier attempt's prompt (JobRun sets these)."""

    ctx: RunContext
    job: Job
    backend: Backend
    client: Any

    async def _adopt_previous(self) -> tuple[str, Any] | None:
        """If an earlier attempt of this job left a prompt on this backend that ComfyUI still
        holds (or finished well), follow that prompt instead of running the workflow again."""
        if self.job.attempts <= 1:
            return None
        if self.job.error is not None and self.job.error.code == OUTPUT_MISSING:
            return None  # its prompt finished, naming files ComfyUI no longer has: run anew
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


__all__ = ["RunAdoption"]
