"""Jobs a worker held before a restart (the same worker id, from its data dir): back to the
queue at once instead of after their lease. The dispatcher and a lone handler lane call it as
they start."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container

from comfyrun.core.job import ACTIVE, Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import ComfyrunError, Conflict
from comfyrun.store.base import Changes, JobStore

log = logging.getLogger(__name__)


async def release_stale_jobs(store: JobStore, worker_id: str, running: Container[str]) -> None:
    """Jobs the store says `worker_id` holds that are not `running` here: a running one is
    requeued (lease lost), one being canceled ends canceled."""
    with contextlib.suppress(ComfyrunError):
        held: list[Job] = []
        cursor: str | None = None
        while True:
            page = await store.list(statuses=list(ACTIVE), limit=500, cursor=cursor)
            held += page.jobs
            cursor = page.next_cursor
            if cursor is None:
                break
        for job in held:
            if job.worker_id != worker_id or job.id in running:
                continue
            event = Event.LEASE_LOST if job.status is JobStatus.RUNNING else Event.CANCELED
            with contextlib.suppress(Conflict):
                await store.transition(
                    job.id, event, expect=job.status, changes=Changes(clear_lease=True)
                )
                log.info(
                    "job %s held by this worker before a restart: %s",
                    job.id,
                    event.value,
                    extra={"action": "job_released", "job_id": job.id, "backend": job.backend},
                )


__all__ = ["release_stale_jobs"]
