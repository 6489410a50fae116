"""The task variant: POST /api/v1/tasks {workflow_id, priority, payload} → 201 with the task;
GET /api/v1/tasks/{id} with status, result, error, retry_count, max_retries, worker_id.
A task is a job: when `workflow_id` names a workflow template, `payload` holds its parameters;
otherwise `payload` is the API prompt. `workflow_id` is kept as metadata, and the result
is ComfyUI's outputs by node (files pointing at comfyrun's storage, as /history shows them).
`video_url` + `video_node_id` (+ `video_input_field`, default `video`) put a video fetched by URL
into that node's input; `models` brings model files (see comfyrun.models).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyrun import errors
from comfyrun.api.compat import runpod as rp
from comfyrun.api.compat.comfy import history_outputs
from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.api.routes.plain_compat import error_response
from comfyrun.core.job import JobStatus
from comfyrun.core.workflow import is_api_prompt, is_ui_workflow
from comfyrun.service import Submission

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[Depends(require_auth)])


class TaskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workflow_id: str = Field(default="", max_length=255)
    priority: int = Field(default=0, ge=-1000, le=1000)
    payload: dict[str, Any]
    max_retries: int | None = Field(default=None, ge=0, le=20)
    models: list[dict[str, Any]] | None = Field(default=None, max_length=32)
    # a video by URL for one node's input (the seed-style fields; fetched like any URL input)
    video_url: str | None = Field(default=None, max_length=8192)
    video_node_id: str | None = Field(default=None, max_length=255)
    video_input_field: str = Field(default="video", min_length=1, max_length=255)

    def inputs(self) -> tuple[dict[str, Any], ...]:
        """`video_url` as a URL input placed into `video_node_id`'s `video_input_field`."""
        if self.video_url is None:
            if self.video_node_id is not None:
                raise errors.InvalidRequest("video_node_id needs a video_url")
            return ()
        if self.video_node_id is None:
            raise errors.InvalidRequest(
                "video_url needs video_node_id: the id of the node whose "
                f"{self.video_input_field!r} input gets the video"
            )
        return (
            {"url": self.video_url, "node": self.video_node_id, "input": self.video_input_field},
        )


@router.post("", status_code=201)
async def create_task(body: TaskRequest, ctx: Ctx) -> Response:
    try:
        base = Submission(
            workflow=body.payload,
            priority=body.priority,
            metadata={rp.META_DIALECT: rp.TASKS, "workflow_id": body.workflow_id},
            max_retries=body.max_retries,
            options={"models": body.models} if body.models else {},
            inputs=body.inputs(),
        )
        template = await _template(ctx, body)
        if template is not None:
            submitted = await ctx.templates.submit(template, body.payload, base)
        else:
            submitted = await ctx.service.submit(base)
    except errors.ComfyrunError as exc:
        return error_response(exc)
    job = submitted.job
    return JSONResponse(
        {
            "id": job.id,
            "workflow_id": body.workflow_id,
            "status": rp.task_status(job),
            "created_at": rp.rfc3339(job.created_at),
        },
        status_code=201,
    )


async def _template(ctx: AppContext, body: TaskRequest) -> str | None:
    """The template `workflow_id` names, or None when `payload` is a workflow itself (an id
    that names no template then stays a label, as before templates existed)."""
    if not body.workflow_id or ctx.templates is None:
        return None
    names = {t.name for t in await ctx.templates.list()}
    if body.workflow_id in names:
        return body.workflow_id
    if is_api_prompt(body.payload) or is_ui_workflow(body.payload):
        return None
    raise errors.NotFound(
        f"workflow template {body.workflow_id!r} not found",
        details={"workflow_id": body.workflow_id},
    )


@router.get("/{task_id}")
async def get_task(task_id: str, ctx: Ctx) -> Response:
    job = await ctx.store.get(task_id)
    if job is None:
        return JSONResponse({"error": f"task {task_id} not found"}, status_code=404)
    result = (
        {"outputs": history_outputs(job.outputs)} if job.status is JobStatus.SUCCEEDED else None
    )
    return JSONResponse(rp.task_response(job, result))


__all__ = ["router"]
