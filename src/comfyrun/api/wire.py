"""Core records as the wire objects of the Comfy API v2 (api.schemas): `job_to_wire` is the one
place a core Job becomes the spec's Job object; an output's download id (`o3-<job id>`) and its
parsing; timestamps as ISO 8601."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from comfyrun.api.schemas import JobErrorOut, JobOut, JobUrls, OutputOut, ProgressOut
from comfyrun.core.job import Job, JobError, JobStatus, Output, Progress

OUTPUT_ID_PREFIX = "o"


def output_id(job_id: str, index: int, output: Output) -> str:
    """The id an output is downloaded by (GET /api/v2/assets/{id}/content): its asset id when
    it has one, else a name for "output `index` of `job_id`"."""
    return output.id or f"{OUTPUT_ID_PREFIX}{index}-{job_id}"


def parse_output_id(value: str) -> tuple[str, int] | None:
    """`o3-<job id>` → (job id, 3); None for anything else."""
    if not value.startswith(OUTPUT_ID_PREFIX):
        return None
    head, sep, job_id = value[len(OUTPUT_ID_PREFIX) :].partition("-")
    if not sep or not head.isdigit() or not job_id:
        return None
    return job_id, int(head)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start) * 1000))


def progress_to_wire(p: Progress) -> ProgressOut:
    return ProgressOut(
        value=min(1.0, max(0.0, p.value)),
        nodes_done=p.nodes_done,
        nodes_total=p.nodes_total,
        current_node=p.current_node,
        current_node_class=p.current_node_class,
        step=p.step,
        steps=p.steps,
        message=p.message,
    )


def error_to_wire(e: JobError) -> JobErrorOut:
    return JobErrorOut(
        code=e.code,
        message=e.message,
        node_id=e.node_id,
        class_type=e.class_type,
        traceback=e.traceback,
        details=e.details,
    )


def output_to_wire(
    job: Job,
    index: int,
    output: Output,
    *,
    base_url: str,
    link: tuple[str | None, float | None] = (None, None),
    expires_at: float,
) -> OutputOut:
    oid = output_id(job.id, index, output)
    url, url_expires = link
    return OutputOut(
        node_id=output.node_id,
        name=output.name,
        type=output.type.value,
        content_type=output.content_type,
        size_bytes=output.size_bytes or 0,
        id=oid,
        hash=output.hash,
        url=url or f"{base_url}/api/v2/assets/{oid}/content",
        url_expires_at=iso(url_expires if url_expires is not None else expires_at) or "",
        job_id=job.id,
        data_base64=output.data_base64,
        text=output.text,
    )


def job_expires_at(job: Job, retention_s: float, now: float) -> float:
    """The retention deadline: set by the worker when the job ends; for a job still in
    flight, `retention_s` after now (it can only move later)."""
    if job.expires_at is not None:
        return job.expires_at
    return (job.finished_at or now) + retention_s


def job_to_wire(
    job: Job,
    *,
    queue_position: int | None,
    base_url: str,
    retention_s: float,
    now: float,
    links: Mapping[int, tuple[str | None, float | None]] | None = None,
) -> JobOut:
    """The spec's Job object. `base_url` is the server's public origin (no trailing slash);
    `links` holds fresh download URLs by output index (signed URLs of remote storage)."""
    expires = job_expires_at(job, retention_s, now)
    # honest timings: the wait ends when ComfyUI starts the prompt (not when a worker claims the
    # job), and a job whose prompt waits in a backend's queue is still queued (on that backend)
    started = job.execution_start
    path = f"/api/v2/jobs/{job.id}"
    return JobOut(
        id=job.id,
        status=JobStatus.QUEUED if job.waiting else job.status,
        created_at=iso(job.created_at) or "",
        started_at=iso(started),
        completed_at=iso(job.finished_at) if job.terminal else None,
        expires_at=iso(expires) or "",
        queue_position=queue_position if job.status is JobStatus.QUEUED else None,
        progress=progress_to_wire(job.progress) if job.progress else None,
        outputs=[
            output_to_wire(
                job,
                i,
                o,
                base_url=base_url,
                link=(links or {}).get(i, (None, None)),
                expires_at=expires,
            )
            for i, o in enumerate(job.outputs)
        ],
        error=error_to_wire(job.error) if job.error else None,
        metrics={
            "queue_ms": _ms(job.created_at, started),
            "execution_ms": _ms(started, job.finished_at),
            "attempts": job.attempts,
        },
        urls=JobUrls(self=path, events=f"{path}/events", cancel=f"{path}/cancel"),
        priority=job.priority,
        attempts=job.attempts,
        max_retries=job.max_retries,
        backend=job.backend,
        metadata=dict(job.metadata),
        type=job.type,
    )


__all__ = [
    "OUTPUT_ID_PREFIX",
    "error_to_wire",
    "iso",
    "job_expires_at",
    "job_to_wire",
    "output_id",
    "output_to_wire",
    "parse_output_id",
    "progress_to_wire",
]
