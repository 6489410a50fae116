"""What the routes of ComfyUI's API share: errors in ComfyUI's shape, the request body, the
empty 200 ComfyUI answers, and the listing of jobs its views read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from comfyrun import errors, jsontext
from comfyrun.api.context import AppContext, get_ctx, require_comfy_auth
from comfyrun.api.errors import retry_after, status_for
from comfyrun.core.job import JSON, Job, JobStatus

Ctx = Annotated[AppContext, Depends(get_ctx)]

#: The most jobs one listing of ComfyUI's views holds (ComfyUI's history keeps 10,000).
MAX_LISTED = 1000


def comfy_router(prefix: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=["comfyui"], dependencies=[Depends(require_comfy_auth)])


# errors in ComfyUI's shape ------------------------------------------------------------------


def comfy_error(
    status: int, kind: str, message: str, details: str = "", node_errors: JSON | None = None
) -> JSONResponse:
    body = {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": node_errors or {},
    }
    return JSONResponse(body, status_code=status)


def comfy_error_for(exc: errors.ComfyrunError) -> JSONResponse:
    """A comfyrun exception as ComfyUI would answer a bad prompt."""
    details = exc.details
    if isinstance(details, Mapping) and isinstance(details.get("error"), Mapping):
        body = {"error": dict(details["error"]), "node_errors": details.get("node_errors") or {}}
        return JSONResponse(body, status_code=400)
    status = status_for(exc)
    if isinstance(exc, errors.InvalidRequest | errors.MissingAsset | errors.InputRejected):
        status = 400
    response = comfy_error(
        status, exc.code, exc.message, json.dumps(details, default=str) if details else ""
    )
    response.headers.update(retry_after(exc) or {})
    return response


#: ComfyUI answers these with an empty 200: documented so, not as JSON.
EMPTY_200: dict[str, Any] = {
    "response_class": Response,
    "responses": {200: {"description": "Done (an empty body, as ComfyUI answers)"}},
}


async def json_body(request: Request) -> Any:
    """The request's JSON; {} for an empty body, None for one that is not JSON."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return jsontext.loads(raw)
    except ValueError:
        return None


async def listed_jobs(
    ctx: AppContext, statuses: list[JobStatus], limit: int = MAX_LISTED
) -> list[Job]:
    """The newest jobs of these statuses, up to `limit` (pages of the job listing)."""
    out: list[Job] = []
    cursor: str | None = None
    while len(out) < limit:
        page = await ctx.service.list_jobs(
            statuses=statuses, limit=min(500, limit - len(out)), cursor=cursor
        )
        out += page.jobs
        cursor = page.next_cursor
        if cursor is None or not page.jobs:
            break
    return out


__all__ = [
    "EMPTY_200",
    "MAX_LISTED",
    "Ctx",
    "comfy_error",
    "comfy_error_for",
    "comfy_router",
    "json_body",
    "listed_jobs",
]
