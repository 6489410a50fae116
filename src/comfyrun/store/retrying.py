"""Jobs in retry: unfinished jobs that have had an attempt fail (or be lost) and run again, or
wait to (RunPod's `/health` counts them as `jobs.retried`).

A job's `attempts` counts its claims (a job handed back unstarted is uncounted), so a queued job
that has any, or a running one with more than one, is in retry."""

from __future__ import annotations

from typing import Protocol

from comfyrun.core.job import Job, JobStatus


def in_retry(job: Job) -> bool:
    if job.status is JobStatus.QUEUED:
        return job.attempts >= 1
    return job.status in (JobStatus.RUNNING, JobStatus.CANCELING) and job.attempts >= 2


class RetryCounts(Protocol):
    async def retrying(self, *, owner: str | None = None) -> int:
        """How many unfinished jobs (of `owner`, if given) are in retry (`in_retry`)."""


__all__ = ["RetryCounts", "in_retry"]
