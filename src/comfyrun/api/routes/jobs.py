"""/api/v2/jobs: submit, read, list, cancel, delete and follow jobs. A thin translator over
JobService: parse the wire request, call the service, render the spec's Job object."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from comfyrun import stages
from comfyrun.api import cursors
from comfyrun.api.context import (
    KEY_RECHECK_S,
    AppContext,
    get_ctx,
    key_still_valid,
    public_base_url,
    require_auth,
)
from comfyrun.api.key_wait import wait_keyed
from comfyrun.api.metadata_bound import check_metadata
from comfyrun.api.schemas import (
    MAX_WEBHOOK_URL,
    JobList,
    JobOptionsRequest,
    JobOut,
    SubmitJobRequest,
)
from comfyrun.api.wire import job_to_wire, output_to_wire, progress_to_wire
from comfyrun.core.job import Job, JobStatus, Progress, request_fingerprint
from comfyrun.dispatch.relay import EVENT_KIND as RELAY_EVENT
from comfyrun.errors import InputRejected, InvalidRequest
from comfyrun.inputs.netguard import AddressPolicy
from comfyrun.service import JobView, Submission, Submitted
from comfyrun.store.base import JobEvent

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v2/jobs", tags=["jobs"], dependencies=[Depends(require_auth)])


async def render(ctx: AppContext, request: Request, view: JobView) -> JobOut:
    """The spec's Job for `view`, with fresh download links from the output storage."""
    links: dict[int, tuple[str | None, float | None]] = {}
    if ctx.storage is not None and ctx.storage.scheme != "file":
        for i, out in enumerate(view.job.outputs):
            if out.storage_key:  # a fresh signed URL: one stored at commit time may be stale
                links[i] = await ctx.storage.url(out.storage_key, expires_s=3600)
            elif out.url is not None:
                links[i] = (out.url, out.url_expires_at)
    return job_to_wire(
        view.job,
        queue_position=view.queue_position,
        base_url=public_base_url(request),
        retention_s=ctx.settings.retention_s,
        now=time.time(),
        links=links,
    )


@router.post("", status_code=201, response_model=JobOut)
async def submit_job(
    body: SubmitJobRequest,
    request: Request,
    response: Response,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    wait: Annotated[float | None, Query(ge=0, description="Hold the request up to N s")] = None,
) -> JobOut:
    received = time.perf_counter()
    check_webhook(ctx, body)
    sub = submission(
        body,
        body.workflow or {},
        lambda: body.model_dump(mode="json"),
        idempotency_key,
        metadata_max_bytes=ctx.settings.metadata_max_bytes,
        wait=wait,
    )
    submitted = await ctx.service.submit(replace(sub, type=body.type, params=body.params))
    return await submitted_job(ctx, request, response, body, submitted, wait, received)


def check_webhook(ctx: AppContext, body: JobOptionsRequest) -> None:
    """Refuse a webhook URL the server may not call, before anything is queued."""
    if body.webhook is not None:
        check_webhook_url(ctx, body.webhook.url)


def check_webhook_url(ctx: AppContext, url: str) -> None:
    """InputRejected for a URL the server would not call (malformed, or an address that
    `webhook_allow` does not open, or one longer than the v2 API takes): every dialect's
    submission checks its webhook so."""
    if len(url) > MAX_WEBHOOK_URL:
        raise InputRejected(f"a webhook URL is at most {MAX_WEBHOOK_URL} characters")
    AddressPolicy.from_entries(ctx.settings.webhook_allow).check_url(url, what="webhook URL")


def submission(
    body: JobOptionsRequest,
    workflow: Any,
    wire_body: Callable[[], Any],
    idempotency_key: str | None,
    *,
    metadata_max_bytes: int,
    wait: float | None = None,
) -> Submission:
    """The service's Submission for a request's job options and workflow (a request held
    with ?wait needs no queue position). `wire_body` gives the body as sent, fingerprinted
    only for an idempotency key (the one thing that compares it). Metadata past
    `metadata_max_bytes` is refused (422)."""
    check_metadata(body.metadata, metadata_max_bytes)
    return Submission(
        workflow=workflow,
        priority=body.priority,
        inputs=tuple(i.model_dump(exclude_none=True) for i in body.inputs),
        options=body.options(),
        metadata=body.metadata,
        max_retries=body.max_retries,
        timeout_s=body.timeout_s,
        idempotency_key=idempotency_key or None,
        request_hash=request_fingerprint(wire_body()) if idempotency_key else None,
        want_position=not wait,
    )


async def submitted_job(
    ctx: AppContext,
    request: Request,
    response: Response,
    body: JobOptionsRequest,
    submitted: Submitted,
    wait: float | None,
    received: float,
) -> JobOut:
    """The response to a submission: its webhook followed, held up to `wait` s, rendered
    (`received`: when the request arrived, for the per-job stage marks)."""
    if not submitted.created:
        response.headers["Idempotency-Replayed"] = "true"
    stages.mark_at(submitted.job.id, "received", received)
    view = JobView(submitted.job, submitted.queue_position)
    if wait:
        view = await wait_keyed(ctx, request, submitted.job.id, min(wait, ctx.settings.max_wait_s))
    rendered = await render(ctx, request, view)
    stages.mark(submitted.job.id, "responded")
    return rendered


def _statuses(raw: list[str] | None) -> list[JobStatus] | None:
    """The statuses `?status=` names (repeated or comma-separated); None, no filter, when it
    names none (`?status=` as a form with "any status" sends it)."""
    names = [s.strip() for item in raw or () for s in item.split(",") if s.strip()]
    if not names:
        return None
    try:
        return sorted(set(map(JobStatus, names)), key=list(JobStatus).index)
    except ValueError:
        raise InvalidRequest(
            f"unknown status in {names}; use {[s.value for s in JobStatus]}",
            details={"status": names},
        ) from None


def _listing_scope(wanted: list[JobStatus] | None, metadata: dict[str, str]) -> str:
    """What a listing's cursor is bound to: its filters, in a canonical order."""
    return json.dumps(
        {
            "status": None if wanted is None else [s.value for s in wanted],
            "metadata": sorted(metadata.items()),
        },
        separators=(",", ":"),
    )


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    ctx: Ctx,
    status: Annotated[
        list[str] | None, Query(description="Filter; repeat or comma-separate")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="next_cursor of the same listing (same filters)"),
    ] = None,
) -> JobList:
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    wanted = _statuses(status)
    scope = _listing_scope(wanted, metadata)
    stored = wanted
    shown: Callable[[Job], bool] | None = None
    if wanted is not None and (JobStatus.QUEUED in wanted) != (JobStatus.RUNNING in wanted):
        # a job held in a backend's queue is running in the store, shown queued: listed by
        # queued, not by running
        if JobStatus.QUEUED in wanted:
            stored = [*wanted, JobStatus.RUNNING]
        shown = _shown_in(set(wanted))
    page = await ctx.service.list_jobs(
        statuses=stored,
        limit=limit,
        cursor=cursors.unbind(cursor, scope),
        metadata=metadata or None,
        where=shown,
    )
    jobs = [await render(ctx, request, JobView(j, None)) for j in page.jobs]
    return JobList(jobs=jobs, next_cursor=cursors.bind(page.next_cursor, scope))


def _shown_in(wanted: set[JobStatus]) -> Callable[[Job], bool]:
    """Whether a job's status as shown (a job held in a backend's queue is queued) is wanted."""
    return lambda job: (JobStatus.QUEUED if job.waiting else job.status) in wanted


@router.get("/{job_id}", response_model=JobOut)
async def get_job(
    job_id: str,
    request: Request,
    ctx: Ctx,
    wait: Annotated[
        float | None, Query(ge=0, description="Hold the request up to N s, until the job ends")
    ] = None,
) -> JobOut:
    if wait:
        view = await wait_keyed(ctx, request, job_id, min(wait, ctx.settings.max_wait_s))
    else:
        view = await ctx.service.get(job_id)
    return await render(ctx, request, view)


@router.get("/{job_id}/workflow")
async def get_job_workflow(job_id: str, ctx: Ctx) -> dict[str, Any]:
    view = await ctx.service.get(job_id)
    return {"workflow": view.job.workflow, "format": "api"}


@router.post("/{job_id}/cancel", response_model=JobOut)
async def cancel_job(job_id: str, request: Request, ctx: Ctx) -> JobOut:
    return await render(ctx, request, await ctx.service.cancel(job_id))


@router.delete("/{job_id}", status_code=204)
async def delete_job(job_id: str, ctx: Ctx) -> Response:
    await ctx.service.delete(job_id)
    return Response(status_code=204)


#: The largest event id a store can hold (a signed 64-bit integer).
MAX_EVENT_ID = 2**63 - 1


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def job_events(
    job_id: str,
    request: Request,
    ctx: Ctx,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event id")
    ] = None,
) -> StreamingResponse:
    after_id = after
    if last_event_id is not None and last_event_id.strip():
        try:
            after_id = int(last_event_id.strip())
            if abs(after_id) > MAX_EVENT_ID:  # (no store holds such an id: SQLite raised)
                raise ValueError(after_id)
        except ValueError:
            raise InvalidRequest(
                "Last-Event-ID must be an event id from this stream",
                details={"last_event_id": last_event_id},
            ) from None
    await ctx.service.get(job_id)  # 404 before the stream starts
    stream = _sse(ctx, request, job_id, after_id)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    ctx: AppContext, request: Request, job_id: str, after_id: int | None
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    keyed = ctx.principal.key_id is not None  # a key revoked meanwhile ends its streams
    keep_alive_s = ctx.settings.sse_keepalive_s
    idle = min(keep_alive_s, KEY_RECHECK_S) if keyed else keep_alive_s
    loop = asyncio.get_running_loop()
    checked = loop.time()
    kept_alive = checked
    async for event in ctx.service.events(job_id, after_id=after_id, idle_s=idle):
        if keyed and loop.time() - checked >= KEY_RECHECK_S:
            if not await key_still_valid(request, ctx.principal, cookie=False):
                return
            checked = loop.time()
        if event is None:  # (a keyed stream wakes more often than it keeps alive)
            if not keyed or loop.time() - kept_alive >= keep_alive_s - KEY_RECHECK_S / 2:
                kept_alive = loop.time()
                yield ": keep-alive\n\n"
            continue
        data = await _event_payload(ctx, request, event)
        if data is None:
            continue
        yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"


async def _event_payload(
    ctx: AppContext, request: Request, event: JobEvent
) -> dict[str, Any] | None:
    data = event.data
    if event.kind == "status":
        return {
            "status": data.get("status"),
            "queue_position": data.get("queue_position"),
            **({"previous": data["previous"]} if "previous" in data else {}),
        }
    if event.kind == "progress":
        return progress_to_wire(_progress(data)).model_dump()
    if event.kind == "output":
        return await _output_payload(ctx, request, event)
    if event.kind == RELAY_EVENT:
        return None  # ComfyUI's own messages, relayed for its /ws clients
    return dict(data)


def _progress(data: dict[str, Any]) -> Progress:
    fields = Progress.__dataclass_fields__
    return Progress(**{k: v for k, v in data.items() if k in fields})


async def _output_payload(
    ctx: AppContext, request: Request, event: JobEvent
) -> dict[str, Any] | None:
    """The spec's Output for an output event: found on the job (for its index and links)."""
    job = await ctx.store.get(event.job_id)
    if job is None:
        return None
    index = _find_output(job, event.data)
    if index is None:
        return dict(event.data)
    wire = await render(ctx, request, JobView(job, None))
    out = wire.outputs[index] if index < len(wire.outputs) else None
    if out is None:
        out = output_to_wire(
            job,
            index,
            job.outputs[index],
            base_url=public_base_url(request),
            expires_at=time.time() + ctx.settings.retention_s,
        )
    return out.model_dump()


def _find_output(job: Job, data: dict[str, Any]) -> int | None:
    key = data.get("storage_key")
    for i, out in enumerate(job.outputs):
        if key is not None and out.storage_key == key:
            return i
        if key is None and out.node_id == data.get("node_id") and out.name == data.get("name"):
            return i
    return None


__all__ = [
    "check_webhook",
    "check_webhook_url",
    "render",
    "router",
    "submission",
    "submitted_job",
]
