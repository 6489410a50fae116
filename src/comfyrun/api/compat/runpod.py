"""Jobs as RunPod's endpoint API, the plain /run variant and the task variant show them.

Outputs take the shape runpod-workers/worker-comfyui returns:
{"images": [{"filename", "type": "base64" | "s3_url", "data"}]}, plus "videos", "audio" and
"texts" lists for the other kinds (the same item shape; texts carry the text as `data`).
The routers decide each file's delivery (inline base64 or a signed URL) and pass it in as a
`Delivered` item; everything here is pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyrun.core.job import JSON, Job, JobStatus, Output, OutputType

#: Metadata key recording which API a job came through (chooses how GET /status renders it).
META_DIALECT = "dialect"
RUNPOD = "runpod"
PLAIN = "plain"
TASKS = "tasks"

IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT = (
    "IN_QUEUE",
    "IN_PROGRESS",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMED_OUT",
)
FINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

_LIST_NAMES = {
    OutputType.IMAGE: "images",
    OutputType.VIDEO: "videos",
    OutputType.AUDIO: "audio",
    OutputType.TEXT: "texts",
}


@dataclass(frozen=True, slots=True)
class Delivered:
    """One output as delivered to the caller: inline base64 or a URL (`s3_url`)."""

    output: Output
    type: str  # "base64" | "s3_url" | "text"
    data: str


def dialect_of(job: Job) -> str | None:
    value = job.metadata.get(META_DIALECT)
    return value if isinstance(value, str) else None


def is_timeout(job: Job) -> bool:
    return job.error is not None and "timeout" in job.error.code.lower()


def runpod_status(job: Job) -> str:
    status = job.status
    if status is JobStatus.QUEUED or job.waiting:
        return IN_QUEUE
    if status in (JobStatus.RUNNING, JobStatus.CANCELING):
        return IN_PROGRESS
    if status is JobStatus.SUCCEEDED:
        return COMPLETED
    if status is JobStatus.CANCELED:
        return CANCELLED
    if status is JobStatus.FAILED:
        return TIMED_OUT if is_timeout(job) else FAILED
    return FAILED if job.error is not None else COMPLETED  # expired: as it ended


def error_text(job: Job) -> str | None:
    """A failure as worker-comfyui words it."""
    err = job.error
    if err is None:
        return None
    if err.node_id is not None:
        return (
            f"Workflow execution error: Node Type: {err.class_type}, Node ID: {err.node_id}, "
            f"Message: {err.message}"
        )
    return err.message


def worker_output(items: Iterable[Delivered]) -> JSON:
    """{"images": [...], "videos"?: [...], "audio"?: [...], "texts"?: [...]}."""
    out: JSON = {"images": []}
    for item in items:
        name = _LIST_NAMES.get(item.output.type, "files")
        out.setdefault(name, []).append(
            {"filename": item.output.name, "type": item.type, "data": item.data}
        )
    return out


def _ms_between(start: float | None, end: float | None) -> int:
    if start is None or end is None:
        return 0
    return max(0, int((end - start) * 1000))


def runpod_response(job: Job, output: JSON | None) -> JSON:
    """RunPod's job object: {id, status, delayTime, executionTime, output?, error?}."""
    status = runpod_status(job)
    body: JSON = {
        "id": job.id,
        "status": status,
        "delayTime": _ms_between(job.created_at, job.execution_start),
        "executionTime": _ms_between(job.execution_start, job.finished_at),
    }
    if status == COMPLETED and output is not None:
        body["output"] = output
    error = error_text(job)
    if status in (FAILED, TIMED_OUT) and error is not None:
        body["error"] = error
    return body


def stream_response(job: Job, output: JSON | None) -> JSON:
    """GET /stream/{id}: the final output as one stream chunk once the job is done."""
    body = runpod_response(job, output)
    chunks = [{"output": output}] if body["status"] == COMPLETED and output is not None else []
    return {"status": body["status"], "stream": chunks}


def health(
    counts: Mapping[JobStatus, int], *, retried: int, workers_idle: int, workers_running: int
) -> JSON:
    """GET /health: RunPod's {jobs, workers}, plus the plain variant's status and job_stats.
    `retried`: the unfinished jobs in retry (an attempt failed or was lost; store.retrying)."""
    queued = counts.get(JobStatus.QUEUED, 0)
    running = counts.get(JobStatus.RUNNING, 0) + counts.get(JobStatus.CANCELING, 0)
    completed = counts.get(JobStatus.SUCCEEDED, 0)
    failed = counts.get(JobStatus.FAILED, 0)
    return {
        "status": "healthy",
        "jobs": {
            "completed": completed,
            "failed": failed,
            "inProgress": running,
            "inQueue": queued,
            "retried": retried,
        },
        "workers": {"idle": workers_idle, "running": workers_running},
        "job_stats": {
            "pending": queued,
            "running": running,
            "completed": completed,
            "failed": failed + counts.get(JobStatus.CANCELED, 0),
            "total": sum(counts.values()),
        },
    }


# the plain /run variant ---------------------------------------------------------------------


def plain_status(job: Job) -> str:
    if job.status is JobStatus.QUEUED or job.waiting:
        return "pending"
    if job.status in (JobStatus.RUNNING, JobStatus.CANCELING):
        return "running"
    if job.status is JobStatus.SUCCEEDED or (job.status is JobStatus.EXPIRED and job.error is None):
        return "completed"
    return "failed"


def plain_error(job: Job) -> str | None:
    if job.status is JobStatus.CANCELED:
        return "canceled"
    return error_text(job)


def plain_response(job: Job, output: JSON | None) -> JSON:
    status = plain_status(job)
    return {
        "job_id": job.id,
        "status": status,
        "result": output if status == "completed" else None,
        "error": plain_error(job) if status == "failed" else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.finished_at,
    }


def plain_summary(job: Job) -> JSON:
    """One of /stats' recent_jobs."""
    return {
        "id": job.id,
        "status": plain_status(job),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.finished_at,
        "error": plain_error(job) if plain_status(job) == "failed" else None,
    }


def plain_stats(counts: Mapping[JobStatus, int], recent: Sequence[Job] | None) -> JSON:
    body: JSON = {
        "total_jobs": sum(counts.values()),
        "pending_jobs": counts.get(JobStatus.QUEUED, 0),
        "running_jobs": counts.get(JobStatus.RUNNING, 0) + counts.get(JobStatus.CANCELING, 0),
        "completed_jobs": counts.get(JobStatus.SUCCEEDED, 0),
        "failed_jobs": counts.get(JobStatus.FAILED, 0) + counts.get(JobStatus.CANCELED, 0),
    }
    if recent is not None:
        body["recent_jobs"] = [plain_summary(j) for j in recent]
    return body


# the task variant ----------------------------------------------------------------------------


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def task_status(job: Job) -> str:
    if job.status is JobStatus.CANCELED:
        return "cancelled"
    return plain_status(job)


def task_response(job: Job, result: Any) -> JSON:
    """GET /api/v1/tasks/{id}: the task record (result: ComfyUI's outputs by node)."""
    status = task_status(job)
    workflow_id = job.metadata.get("workflow_id")
    return {
        "id": job.id,
        "workflow_id": workflow_id if isinstance(workflow_id, str) else "",
        "priority": job.priority,
        "status": status,
        "payload": job.workflow,
        "worker_id": job.backend or job.worker_id or "",
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "completed_at": rfc3339(job.finished_at),
        "result": result if status == "completed" else None,
        "error": (plain_error(job) or "") if status in ("failed", "cancelled") else "",
        "retry_count": max(0, job.attempts - 1),
        "max_retries": job.max_retries,
    }


__all__ = [
    "COMPLETED",
    "FINAL",
    "META_DIALECT",
    "PLAIN",
    "RUNPOD",
    "TASKS",
    "Delivered",
    "dialect_of",
    "error_text",
    "health",
    "plain_response",
    "plain_stats",
    "plain_status",
    "rfc3339",
    "runpod_response",
    "runpod_status",
    "stream_response",
    "task_response",
    "task_status",
    "worker_output",
]
