"""The plain /run variant some self-hosted deployments use (worker-comfyui's "HTTP API mode"):
POST /run {"workflow", "images"} → {"job_id", "status": "pending"}; GET /status/{job_id};
GET /stats?include_recent=; DELETE /admin/job/{job_id}.

POST /run and GET /status/{id} share their paths with RunPod's API: runpod_compat owns those
routes and calls `submit_plain` / `plain_status_body` here for jobs of this dialect. A thin
translator over JobService; `deliver_outputs` (shared with the RunPod dialect) turns a job's
stored outputs into worker-comfyui's output object.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from comfyrun import errors
from comfyrun.api.compat import runpod as rp
from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.api.errors import retry_after, status_for
from comfyrun.api.wire import output_id
from comfyrun.core.job import JSON, Job, JobStatus, OutputType
from comfyrun.service import Submission

log = logging.getLogger(__name__)

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["plain"], dependencies=[Depends(require_auth)])

#: Outputs larger than this are linked (s3_url) rather than inlined, when a link exists.
INLINE_MAX_BYTES = 64 * 1024 * 1024
#: At most this many bytes of files inline in one answer (the rest given as URLs).
INLINE_TOTAL_MAX_BYTES = 64 * 1024 * 1024


def error_response(exc: errors.ComfyrunError) -> JSONResponse:
    """comfyrun's exceptions in the shape these simple APIs use: {"error": message}."""
    body: JSON = {"error": exc.message, "code": exc.code}
    if exc.details:
        body["details"] = exc.details
    status = status_for(exc)
    return JSONResponse(
        body, status_code=400 if status == 422 else status, headers=retry_after(exc)
    )


def images_to_inputs(images: Any) -> tuple[JSON, ...]:
    """worker-comfyui's "images": [{"name", "image"}] → comfyrun input specs."""
    if images is None:
        return ()
    if not isinstance(images, list):
        raise errors.InvalidRequest("images must be a list of {name, image}")
    specs = []
    for i, item in enumerate(images):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("image"), str)
        ):
            raise errors.InvalidRequest(
                f"images[{i}] needs a string name and image (base64 or data URI)",
                details={"index": i},
            )
        specs.append({"name": item["name"], "data": item["image"]})
    return tuple(specs)


async def deliver_outputs(ctx: AppContext, job: Job, base_url: str | None = None) -> JSON:
    """worker-comfyui's output object for the job: each file inline (base64) unless the output
    storage gives a signed URL (then `s3_url`), as worker-comfyui does with a bucket. A file
    past `INLINE_MAX_BYTES`, or past what is left of `INLINE_TOTAL_MAX_BYTES` for the answer,
    is given as the URL of comfyrun's own download of it (`base_url`: the server's; also
    `s3_url`, the type worker-comfyui gives a URL to fetch, with the caller's key); where no
    server answers (the RunPod handler) it is left out, with a warning."""
    items: list[rp.Delivered] = []
    storage = ctx.storage
    inline_left = INLINE_TOTAL_MAX_BYTES
    for index, out in enumerate(job.outputs):
        if out.type is OutputType.TEXT or out.storage_key is None:
            if out.text is not None:
                items.append(rp.Delivered(out, "text", out.text))
            continue
        if out.data_base64 is not None:
            items.append(rp.Delivered(out, "base64", out.data_base64))
            continue
        if storage is None:
            continue
        if storage.scheme != "file":
            url, _ = await storage.url(out.storage_key, expires_s=3600)
            if url:
                items.append(rp.Delivered(out, "s3_url", url))
                continue
        size = out.size_bytes or 0
        if size > min(INLINE_MAX_BYTES, inline_left):
            if base_url is not None:
                url = f"{base_url}/api/v2/assets/{output_id(job.id, index, out)}/content"
                items.append(rp.Delivered(out, "s3_url", url))
            else:
                log.warning("output %s too large to inline: left out", out.storage_key)
            continue
        try:
            raw = b"".join([chunk async for chunk in storage.open(out.storage_key)])
        except errors.ComfyrunError:
            continue
        inline_left -= len(raw)
        items.append(rp.Delivered(out, "base64", base64.b64encode(raw).decode("ascii")))
    return rp.worker_output(items)


async def submit_plain(ctx: AppContext, body: JSON) -> Response:
    workflow = body.get("workflow")
    try:
        submitted = await ctx.service.submit(
            Submission(
                workflow=workflow if isinstance(workflow, dict) else {},
                inputs=images_to_inputs(body.get("images")),
                metadata={rp.META_DIALECT: rp.PLAIN},
            )
        )
    except errors.ComfyrunError as exc:
        return error_response(exc)
    return JSONResponse({"job_id": submitted.job.id, "status": "pending"})


async def plain_status_body(ctx: AppContext, job: Job, base_url: str | None = None) -> JSON:
    if job.status is not JobStatus.SUCCEEDED:
        return rp.plain_response(job, None)
    output = await deliver_outputs(ctx, job, base_url)
    return rp.plain_response(job, output)


@router.get("/stats")
async def stats(ctx: Ctx, include_recent: Annotated[bool, Query()] = False) -> JSON:
    counts = await ctx.store.counts()
    recent: list[Job] | None = None
    if include_recent:
        recent = (await ctx.service.list_jobs(limit=20)).jobs
    return rp.plain_stats(counts, recent)


@router.delete("/admin/job/{job_id}")
async def delete_job(job_id: str, ctx: Ctx) -> Response:
    try:
        await ctx.service.delete(job_id)
    except errors.ComfyrunError as exc:
        return error_response(exc)
    return JSONResponse({"message": f"Job {job_id} deleted", "job_id": job_id})


__all__ = [
    "deliver_outputs",
    "error_response",
    "images_to_inputs",
    "plain_status_body",
    "router",
    "submit_plain",
]
