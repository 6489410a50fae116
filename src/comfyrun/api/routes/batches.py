"""/api/v2/batches: many jobs of one workflow template, followed as one. A thin translator over
BatchService."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from comfyrun.api import cursors
from comfyrun.api.context import AppContext, app_ctx, get_ctx, require_auth
from comfyrun.api.routes.jobs import check_webhook, render, submission
from comfyrun.api.schemas import JobList, JobOptionsRequest
from comfyrun.api.wire import iso
from comfyrun.core.job import Job, JobStatus
from comfyrun.errors import NotFound
from comfyrun.outputs.archive import Entry, one_chunk, zip_stream
from comfyrun.service import JobView
from comfyrun.templates.batches import MAX_ITEMS, META_INDEX, BatchService, BatchView
from comfyrun.templates.service import META_PARAMS

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v2/batches", tags=["batches"], dependencies=[Depends(require_auth)])


class CreateBatchRequest(JobOptionsRequest):
    """A batch: `items` (one job each) or a `matrix` (one job per combination); the job
    options apply to every job, the webhook to the batch (one batch.completed)."""

    workflow: str = Field(..., max_length=128, description="The template's name")
    items: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ITEMS)
    matrix: dict[str, list[Any]] | None = None


class BatchOut(BaseModel):
    id: str
    workflow: str
    version: str
    status: str
    total: int
    counts: dict[str, int]
    progress: float
    created_at: str
    finished_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


async def get_batches(request: Request) -> BatchService:
    service: BatchService = app_ctx(request).batches
    return service


Batches = Annotated[BatchService, Depends(get_batches)]


def batch_out(view: BatchView) -> BatchOut:
    b = view.batch
    return BatchOut(
        id=b.id,
        workflow=b.workflow,
        version=b.version,
        status=b.status.value,
        total=b.total,
        counts={s.value: view.counts.get(s, 0) for s in JobStatus},
        progress=round(view.progress, 4),
        created_at=iso(b.created_at) or "",
        finished_at=iso(b.finished_at),
        metadata=b.metadata,
    )


@router.post("", status_code=201, response_model=BatchOut)
async def create_batch(body: CreateBatchRequest, ctx: Ctx, batches: Batches) -> BatchOut:
    check_webhook(ctx, body)
    base = submission(body, {}, dict, None, metadata_max_bytes=ctx.settings.metadata_max_bytes)
    options = dict(base.options)
    hook = options.pop("webhook", None)  # one webhook for the batch, none per job
    view = await batches.create(
        body.workflow,
        items=body.items,
        matrix=body.matrix,
        base=dataclasses.replace(base, options=options, request_hash=None),
        options={"webhook": hook} if hook else None,
    )
    return batch_out(view)


@router.get("/{batch_id}", response_model=BatchOut)
async def get_batch(batch_id: str, batches: Batches) -> BatchOut:
    return batch_out(await batches.get(batch_id))


@router.get("/{batch_id}/jobs", response_model=JobList)
async def batch_jobs(
    batch_id: str,
    request: Request,
    ctx: Ctx,
    batches: Batches,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    scope = f"batch:{batch_id}"
    page = await batches.jobs(batch_id, limit=limit, cursor=cursors.unbind(cursor, scope))
    jobs = [await render(ctx, request, JobView(j, None)) for j in page.jobs]
    return JobList(jobs=jobs, next_cursor=cursors.bind(page.next_cursor, scope))


@router.post("/{batch_id}/cancel", response_model=BatchOut)
async def cancel_batch(batch_id: str, batches: Batches) -> BatchOut:
    return batch_out(await batches.cancel(batch_id))


@router.get("/{batch_id}/outputs.zip", response_class=StreamingResponse)
async def batch_outputs(batch_id: str, ctx: Ctx, batches: Batches) -> StreamingResponse:
    """Every output of the batch's jobs, `NNNNN/<node>_<name>` by item, with a
    manifest.jsonl (one line per job: index, id, status, params, files), streamed."""
    await batches.get(batch_id)  # 404 before the stream starts
    return StreamingResponse(
        zip_stream(_entries(ctx, batches, batch_id)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.zip"'},
    )


async def _entries(ctx: AppContext, batches: BatchService, batch_id: str) -> AsyncIterator[Entry]:
    manifest: list[str] = []
    async for job in batches.all_jobs(batch_id):
        index = job.metadata.get(META_INDEX, len(manifest))
        files: list[str] = []
        for out in job.outputs:
            name = f"{int(index):05d}/{_safe(out.node_id)}_{_safe(out.name)}"
            if name in files:  # an archive entry name is used once
                path = PurePosixPath(name)
                name = str(path.with_stem(f"{path.stem}_{len(files)}"))
            chunks = _output_bytes(ctx, out)
            if chunks is None:
                continue
            files.append(name)
            yield name, chunks
        manifest.append(json.dumps(_manifest_line(job, index, files)))
    yield "manifest.jsonl", one_chunk(("\n".join(manifest) + "\n").encode())


def _manifest_line(job: Job, index: Any, files: list[str]) -> dict[str, Any]:
    line: dict[str, Any] = {
        "index": index,
        "job_id": job.id,
        "status": job.status.value,
        "params": job.metadata.get(META_PARAMS, {}),
        "files": files,
    }
    if job.error is not None:
        line["error"] = {"code": job.error.code, "message": job.error.message}
    return line


def _output_bytes(ctx: AppContext, out: Any) -> AsyncIterator[bytes] | None:
    if out.storage_key and ctx.storage is not None:
        chunks: AsyncIterator[bytes] = ctx.storage.open(out.storage_key)
        return chunks
    if out.data_base64:
        return one_chunk(base64.b64decode(out.data_base64))
    if out.text is not None:
        return one_chunk(str(out.text).encode())
    return None


def _safe(part: str) -> str:
    name = PurePosixPath(str(part)).name or "output"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def render_batch(batches: BatchService) -> Any:
    """A batch id → its wire object (for the batch.completed webhook)."""

    async def rendered(batch_id: str) -> dict[str, Any] | None:
        try:
            view = await batches.get(batch_id)
        except NotFound:
            return None  # deleted since: the webhook carries its id alone
        data: dict[str, Any] = batch_out(view).model_dump(mode="json")
        return data

    return rendered


__all__ = ["BatchOut", "CreateBatchRequest", "render_batch", "router"]
