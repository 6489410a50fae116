"""The sweeper: every worker periodically requeues jobs whose lease ran out (their worker died)
and expires finished jobs past their retention, deleting their files from the output storage.

Running it in every worker is safe: the store applies each change with a compare-and-set, so
two sweepers never requeue or expire the same job twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from comfyrun.core.job import JobStatus
from comfyrun.errors import ComfyrunError
from comfyrun.outputs import OutputStorage, job_prefix
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        store: JobStore,
        storage: OutputStorage,
        *,
        interval_s: float,
        on_requeue: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.interval_s = interval_s
        self.on_requeue = on_requeue

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # leases and retention run on a clock
            await self.sweep_once()

    async def sweep_once(self) -> None:
        try:
            for job in await self.store.sweep_expired_leases():
                if job.status is JobStatus.QUEUED and self.on_requeue is not None:
                    self.on_requeue(job.next_run_at)
                log.info(
                    "job %s lost its lease: %s",
                    job.id,
                    job.status.value,
                    extra={"action": "job_lease_expired", "job_id": job.id, "backend": job.backend},
                )
            for job in await self.store.expire_finished():
                removed = await self.storage.delete_prefix(job_prefix(job.id))
                log.info(
                    "job %s expired; %d files removed",
                    job.id,
                    removed,
                    extra={"action": "job_expired", "job_id": job.id, "backend": job.backend},
                )
        except ComfyrunError as exc:
            log.warning("sweep failed: %s", exc, extra={"action": "sweep_error"})


__all__ = ["Sweeper"]
