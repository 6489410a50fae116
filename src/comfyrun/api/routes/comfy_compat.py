"""ComfyUI's own HTTP and websocket API, served by comfyrun: one virtual ComfyUI in front of
the whole backend pool. A thin translator over JobService: a prompt is a job (its prompt_id is
the job id), /queue and /history are views of the store, /view serves comfyrun's output
storage, and /ws translates the store's job events into ComfyUI's messages for the prompts
submitted with that clientId. Every route is also served under the /api prefix.

Errors are answered in ComfyUI's shapes: {"error": {type, message, details, extra_info},
"node_errors": {...}} for prompts (400 for validation, as ComfyUI does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from comfyrun import errors
from comfyrun.api.compat import comfy as cc
from comfyrun.api.compat.comfy_socket import ACTIVE, clients, comfy_ws, status_message
from comfyrun.api.compat.comfy_uploads import (
    INPUT_SUFFIX,
    read_upload,
    store_upload,
    uploads_in,
)
from comfyrun.api.context import AppContext, get_ctx, require_comfy_auth
from comfyrun.api.errors import status_for
from comfyrun.api.routes.comfy_catalog import add_catalog_routes
from comfyrun.api.routes.comfy_system import system_stats
from comfyrun.api.routes.files import serve_key
from comfyrun.core.job import JSON, TERMINAL, Job, JobStatus
from comfyrun.service import JobView, Submission

log = logging.getLogger(__name__)

Ctx = Annotated[AppContext, Depends(get_ctx)]

_MAX_LISTED = 1000


def _router(prefix: str) -> APIRouter:
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
    if isinstance(exc, errors.QueueFull):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


# routes --------------------------------------------------------------------------------------


#: ComfyUI answers these with an empty 200: documented so, not as JSON.
EMPTY_200: dict[str, Any] = {
    "response_class": Response,
    "responses": {200: {"description": "Done (an empty body, as ComfyUI answers)"}},
}


def _add_routes(router: APIRouter) -> None:
    router.add_api_route("/prompt", post_prompt, methods=["POST"])
    router.add_api_route("/prompt", get_prompt, methods=["GET"])
    router.add_api_route("/prompt_sync", prompt_sync, methods=["POST"])
    router.add_api_route("/queue", get_queue, methods=["GET"])
    router.add_api_route("/queue", post_queue, methods=["POST"], **EMPTY_200)
    router.add_api_route("/history", get_history, methods=["GET"])
    router.add_api_route("/history/{prompt_id}", get_history_item, methods=["GET"])
    router.add_api_route("/history", post_history, methods=["POST"], **EMPTY_200)
    router.add_api_route("/interrupt", interrupt, methods=["POST"], **EMPTY_200)
    router.add_api_route("/view", view, methods=["GET"])
    router.add_api_route("/upload/image", upload_image, methods=["POST"])
    router.add_api_route("/upload/mask", upload_mask, methods=["POST"])
    router.add_api_route("/system_stats", system_stats, methods=["GET"])  # comfy_system
    add_catalog_routes(router)  # /object_info, /models, /embeddings, /features


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def post_prompt(request: Request, ctx: Ctx) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return comfy_error(400, "invalid_request", "the body is not a JSON object")
    prompt = body.get("prompt")
    if prompt is None:
        return comfy_error(400, "no_prompt", "No prompt provided")
    if not isinstance(prompt, dict):
        return comfy_error(400, "invalid_prompt", "prompt must be a JSON object")
    try:
        job = await submit_prompt(ctx, body, prompt)
    except errors.ComfyrunError as exc:
        return comfy_error_for(exc)
    number = job.metadata.get(cc.META_NUMBER, 0)
    return JSONResponse({"prompt_id": job.id, "number": number, "node_errors": {}})


async def submit_prompt(ctx: AppContext, body: JSON, prompt: JSON) -> Job:
    """POST /prompt's body → a queued job (prompt_id honoured as the job id)."""
    hub = clients(ctx)
    prompt_id = body.get("prompt_id")
    job_id = None if prompt_id is None else str(prompt_id)
    extra = body.get("extra_data")
    extra_data: JSON = dict(extra) if isinstance(extra, dict) else {}
    client_id = body.get("client_id")
    if client_id is not None:
        extra_data["client_id"] = str(client_id)
    number = body.get("number")
    if not isinstance(number, int | float) or isinstance(number, bool):
        number = next(hub.numbers)
        if body.get("front"):
            number = -number
    options: JSON = {"extra_data": extra_data} if extra_data else {}
    if extra_data.get("requirements") is not None:  # comfyrun's: backend labels to match
        options["requirements"] = extra_data["requirements"]
    metadata: JSON = {cc.META_DIALECT: cc.DIALECT, cc.META_NUMBER: number}
    if client_id is not None:
        metadata[cc.META_CLIENT_ID] = str(client_id)
    submitted = await ctx.service.submit(
        Submission(
            workflow=prompt,
            priority=1 if body.get("front") else 0,
            inputs=tuple(await uploads_in(ctx, prompt)),
            options=options,
            metadata=metadata,
            job_id=job_id,
            # ComfyUI overwrites the history of a re-used prompt_id (a running one cannot be):
            # once the new prompt passed its checks, not before
            replace_finished=True,
            want_position=False,  # POST /prompt answers a number, not a position
        )
    )
    if client_id is not None:
        hub.notify(str(client_id), submitted.job.id, ctx.principal.owner)
    hub.broadcast_status_soon()
    return submitted.job


async def get_prompt(ctx: Ctx) -> dict[str, Any]:
    message = await status_message(ctx, None)
    status: dict[str, Any] = message["data"]["status"]
    return status


async def prompt_sync(
    request: Request,
    ctx: Ctx,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
) -> Response:
    """Submit and hold the request until the prompt is done (or `timeout` seconds)."""
    started = time.time()
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
        return _sync_error("no_prompt", "the body needs a prompt object", None, {})
    try:
        job = await submit_prompt(ctx, body, body["prompt"])
    except errors.ComfyrunError as exc:
        shaped = json.loads(bytes(comfy_error_for(exc).body))
        return _sync_error(
            shaped["error"]["type"], shaped["error"]["message"], None, shaped["node_errors"]
        )
    view = await ctx.service.wait(job.id, min(timeout, ctx.settings.max_wait_s))
    job = view.job
    if job.status is not JobStatus.SUCCEEDED:
        if not job.terminal:
            return _sync_error("timeout", f"not done after {timeout} s", job.id, {}, status=504)
        detail = job.error.message if job.error is not None else job.status.value
        return _sync_error("execution_failed", detail, job.id, {}, status=500)
    outputs = cc.history_outputs(job.outputs)
    if body.get("return_image_base64"):
        outputs = await _with_base64(ctx, job, outputs)
    return JSONResponse(
        {
            "prompt_id": job.id,
            "status": "success",
            "execution_time": round(time.time() - started, 3),
            "outputs": outputs,
            "node_errors": {},
        }
    )


async def _with_base64(ctx: AppContext, job: Job, outputs: dict[str, JSON]) -> dict[str, JSON]:
    import base64

    storage = ctx.storage
    if storage is None:
        return outputs
    for out in job.outputs:
        ref = cc.file_ref(out)
        if ref is None or out.storage_key is None:
            continue
        data = out.data_base64
        if data is None:
            raw = b"".join([c async for c in storage.open(out.storage_key)])
            data = base64.b64encode(raw).decode("ascii")
        for item in outputs.get(out.node_id, {}).get(cc.output_key_name(out), []):
            if isinstance(item, dict) and item.get("filename") == ref["filename"]:
                item["image_base64"] = data
    return outputs


def _sync_error(
    kind: str, detail: str, prompt_id: str | None, node_errors: JSON, *, status: int = 400
) -> JSONResponse:
    return JSONResponse(
        {
            "error": kind,
            "detail": detail,
            "prompt_id": prompt_id,
            "node_errors": node_errors,
            "timestamp": time.time(),
        },
        status_code=status,
    )


async def _jobs(ctx: AppContext, statuses: list[JobStatus], limit: int = _MAX_LISTED) -> list[Job]:
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


async def get_queue(ctx: Ctx) -> dict[str, Any]:
    """ComfyUI's queue: the prompts running, then those pending in the order they will run
    (a claimed job whose prompt waits in a backend's queue first; at most `_MAX_LISTED`
    queued ones, from the head of the queue)."""
    entries = await ctx.store.queue(limit=_MAX_LISTED)
    running = [e for e in entries if e.status is not JobStatus.QUEUED and not e.waiting]
    pending = [e for e in entries if e.status is JobStatus.QUEUED or e.waiting]
    return {
        "queue_running": [cc.queue_entry_item(e) for e in running],
        "queue_pending": [cc.queue_entry_item(e) for e in pending],
    }


async def post_queue(request: Request, ctx: Ctx) -> Response:
    """{"delete": [ids]} removes those pending prompts, {"clear": true} every pending one; a
    removed prompt never reaches the history, as in ComfyUI."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        return comfy_error(400, "invalid_request", "the body is not a JSON object")
    if body.get("clear"):
        await _clear_pending(ctx)
    delete = body.get("delete")
    if isinstance(delete, list):
        for job_id in [str(i) for i in delete]:
            await _drop_pending(ctx, job_id)
    return Response(status_code=200)


async def _clear_pending(ctx: AppContext) -> None:
    """Every pending prompt, however long the queue (the listing shows `_MAX_LISTED` at a
    time): as many listings as the pending prompts at the start fill, so prompts submitted
    meanwhile do not keep the request going."""
    counts = await ctx.store.counts(unfinished=True)
    pending = counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING]
    tried: set[str] = set()
    for _ in range(1 + pending // _MAX_LISTED):
        ids = [
            e.id
            for e in await ctx.store.queue(limit=_MAX_LISTED)
            if (e.status is JobStatus.QUEUED or e.waiting) and e.id not in tried
        ]
        if not ids:
            return
        for job_id in ids:
            tried.add(job_id)
            await _drop_pending(ctx, job_id)


async def _drop_pending(ctx: AppContext, job_id: str) -> None:
    job = await ctx.store.get(job_id)
    if job is None or not (job.status is JobStatus.QUEUED or job.waiting):
        return
    with contextlib.suppress(errors.ComfyrunError):
        view = await ctx.service.cancel(job_id)
        if job.waiting:  # held in a backend's queue: its worker takes the prompt back first
            view = await ctx.service.wait(job_id, HELD_DROP_TIMEOUT_S)
        if view.job.terminal:
            await ctx.service.delete(job_id)


#: How long POST /queue {"delete"} waits for a worker to take back a prompt held in a backend's
#: queue before it leaves the (canceled) job in the history.
HELD_DROP_TIMEOUT_S = 10.0


async def get_history(
    ctx: Ctx,
    max_items: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Finished prompts (the newest 1000 at most), oldest first, as ComfyUI lists them:
    `max_items=N` alone gives the newest N; `offset=k` counts from the oldest."""
    jobs = await _jobs(ctx, sorted(TERMINAL))
    jobs.reverse()  # oldest first
    if max_items is not None and not offset:
        jobs = jobs[-max_items:]
    else:
        jobs = jobs[offset : None if max_items is None else offset + max_items]
    return {j.id: cc.history_entry(j) for j in jobs}


async def get_history_item(prompt_id: str, ctx: Ctx) -> dict[str, Any]:
    job = await ctx.service.job(prompt_id)  # a prompt just finished is at hand, not re-read
    if job is None or not job.terminal:
        return {}
    return {job.id: cc.history_entry(job)}


async def post_history(request: Request, ctx: Ctx) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return comfy_error(400, "invalid_request", "the body is not a JSON object")
    ids: list[str] = []
    if body.get("clear"):
        ids += [j.id for j in await _jobs(ctx, sorted(TERMINAL))]
    delete = body.get("delete")
    if isinstance(delete, list):
        ids += [str(i) for i in delete]
    for job_id in ids:
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await ctx.service.delete(job_id)
    return Response(status_code=200)


async def interrupt(request: Request, ctx: Ctx) -> Response:
    """{"prompt_id": X} interrupts X if it runs; no id interrupts the running prompts that
    came through this API (other dialects' jobs are left alone)."""
    body = await _json_body(request)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    if prompt_id is not None:
        targets = [str(prompt_id)]
    else:
        targets = [
            j.id
            for j in await _jobs(ctx, list(ACTIVE))
            if j.metadata.get(cc.META_DIALECT) == cc.DIALECT
        ]
    for job_id in targets:
        job = await ctx.store.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING and not job.waiting:
            with contextlib.suppress(errors.ComfyrunError):
                await ctx.service.cancel(job_id)
    return Response(status_code=200)


async def view(
    ctx: Ctx,
    filename: str | None = None,
    subfolder: str = "",
    type: str | None = None,
) -> Response:
    """An output (type=output: "<job_id>/<node_id>" subfolders) or an uploaded input."""
    if not filename:
        return comfy_error(404, "not_found", "no filename")
    if filename.endswith(INPUT_SUFFIX):
        filename, type = filename.removesuffix(INPUT_SUFFIX), "input"
    kind = type or "output"
    if kind not in ("output", "input", "temp"):
        return comfy_error(400, "invalid_type", f"unknown type {kind}")
    parts = [p for p in f"{subfolder}/{filename}".split("/") if p]
    if any(p in (".", "..") for p in parts) or filename.startswith("/"):
        return comfy_error(403, "forbidden", "invalid path")
    name = "/".join(parts)
    media = mimetypes.guess_type(filename)[0]
    headers = {"Content-Disposition": f'filename="{filename}"'}
    try:
        if kind == "input":
            record = await read_upload(ctx, name)
            if record is None or ctx.assets is None:
                return comfy_error(404, "not_found", f"no input {name}")
            asset = await ctx.assets.get(record["asset_id"])
            response = await serve_key(ctx, asset.storage_key, media, asset.size_bytes, None)
        elif kind == "output":
            if ctx.principal.owner is not None and await ctx.store.get(parts[0]) is None:
                raise errors.NotFound(name)  # another key's job (outputs live under its id)
            response = await serve_key(ctx, name, media, None, None)
        else:
            return comfy_error(404, "not_found", "comfyrun keeps no temp files")
    except errors.NotFound:
        return comfy_error(404, "not_found", f"no {kind} file {name}")
    response.headers.update(headers)
    return response


async def _upload(
    image: UploadFile, subfolder: str, overwrite: str | None, ctx: AppContext
) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await image.read(1 << 20):
            yield chunk

    try:
        name, folder = await store_upload(
            ctx,
            chunks(),
            filename=image.filename or "",
            subfolder=subfolder,
            content_type=image.content_type or "application/octet-stream",
            overwrite=overwrite is not None and overwrite.lower() in ("true", "1"),
        )
    except errors.ComfyrunError as exc:
        return comfy_error_for(exc)
    return JSONResponse({"name": name, "subfolder": folder, "type": "input"})


async def upload_image(
    ctx: Ctx,
    image: Annotated[UploadFile | None, File()] = None,
    overwrite: Annotated[str | None, Form()] = None,
    subfolder: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "input",
) -> Response:
    if image is None:
        return comfy_error(400, "invalid_request", "no image field")
    return await _upload(image, subfolder, overwrite, ctx)


async def upload_mask(
    ctx: Ctx,
    image: Annotated[UploadFile | None, File()] = None,
    overwrite: Annotated[str | None, Form()] = None,
    subfolder: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "input",
) -> Response:
    """Stored as given: comfyrun does not composite the mask onto `original_ref`."""
    if image is None:
        return comfy_error(400, "invalid_request", "no image field")
    return await _upload(image, subfolder, overwrite, ctx)


# ComfyUI's newer job endpoints (/api/jobs) ---------------------------------------------------

jobs_router = APIRouter(
    prefix="/api/jobs", tags=["comfyui"], dependencies=[Depends(require_comfy_auth)]
)


@jobs_router.get("")
async def list_api_jobs(
    ctx: Ctx,
    status: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    sort_order: Annotated[str, Query()] = "desc",
) -> Response:
    names = [s.strip() for s in (status or "").split(",") if s.strip()]
    unknown = [n for n in names if n not in cc.JOB_STATUSES]
    if unknown:
        return JSONResponse({"error": f"unknown status {unknown}"}, status_code=400)
    statuses = cc.statuses_for(names) if names else list(JobStatus)
    wanted = offset + limit + 1
    if names and JobStatus.RUNNING in statuses:
        # a running job is pending while its prompt waits in a backend's queue, else in
        # progress: read them all (few: one or two per backend) and keep those asked for
        others: list[JobStatus] = [s for s in statuses if s is not JobStatus.RUNNING]
        jobs: list[Job] = await _jobs(ctx, others, limit=wanted) if others else []
        jobs += [j for j in await _jobs(ctx, [JobStatus.RUNNING]) if cc.job_status(j) in names]
        jobs = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)[:wanted]
    else:
        jobs = await _jobs(ctx, statuses, limit=wanted)
    if sort_order == "asc":
        jobs.reverse()
    page = jobs[offset : offset + limit]
    return JSONResponse(
        {
            "jobs": [cc.api_job(j) for j in page],
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": len(jobs),
                "has_more": len(jobs) > offset + limit,
            },
        }
    )


@jobs_router.get("/{job_id}")
async def get_api_job(job_id: str, ctx: Ctx) -> Response:
    job = await ctx.store.get(job_id)
    if job is None:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    return JSONResponse(cc.api_job(job, detail=True))


@jobs_router.post("/{job_id}/cancel")
async def cancel_api_job(job_id: str, ctx: Ctx) -> Response:
    try:
        view: JobView = await ctx.service.cancel(job_id)
    except errors.NotFound:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    return JSONResponse(cc.api_job(view.job))


def build_routers() -> list[APIRouter]:
    """ComfyUI's routes at the root and under /api, the /api/jobs endpoints, and /ws."""
    routers = []
    for prefix in ("", "/api"):
        router = _router(prefix)
        _add_routes(router)
        ws = APIRouter(prefix=prefix, tags=["comfyui"])
        ws.add_api_websocket_route("/ws", comfy_ws)
        routers += [router, ws]
    routers.append(jobs_router)
    return routers


__all__ = [
    "build_routers",
    "comfy_error",
    "comfy_error_for",
    "submit_prompt",
]
