"""ComfyUI's own HTTP and websocket API, served by comfyrun: one virtual ComfyUI in front of
the whole backend pool. A thin translator over JobService: a prompt is a job (its prompt_id is
the job id), /queue and /history are views of the store (comfy_queue), /view serves comfyrun's
output storage, and /ws translates the store's job events into ComfyUI's messages for the prompts
submitted with that clientId. Every route is also served under the /api prefix.

Errors are answered in ComfyUI's shapes: {"error": {type, message, details, extra_info},
"node_errors": {...}} for prompts (400 for validation, as ComfyUI does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from math import isfinite
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, Response

from comfyrun import errors
from comfyrun.api.compat import comfy as cc
from comfyrun.api.compat.comfy_clients import clients, status_message
from comfyrun.api.compat.comfy_masks import MASK_MAX, store_mask
from comfyrun.api.compat.comfy_socket import ACTIVE, comfy_ws
from comfyrun.api.compat.comfy_uploads import (
    store_upload,
    uploads_in,
)
from comfyrun.api.context import AppContext
from comfyrun.api.key_wait import wait_keyed
from comfyrun.api.routes.comfy_catalog import add_catalog_routes
from comfyrun.api.routes.comfy_common import (
    EMPTY_200,
    Ctx,
    comfy_error,
    comfy_error_for,
    comfy_router,
    json_body,
    listed_jobs,
)
from comfyrun.api.routes.comfy_queue import add_queue_routes, jobs_router
from comfyrun.api.routes.comfy_system import system_stats
from comfyrun.api.routes.comfy_view import view
from comfyrun.core.job import JSON, PARTIAL_TARGETS, Job, JobStatus
from comfyrun.service import Submission

log = logging.getLogger(__name__)


# routes --------------------------------------------------------------------------------------


def _add_routes(router: APIRouter) -> None:
    router.add_api_route("/prompt", post_prompt, methods=["POST"])
    router.add_api_route("/prompt", get_prompt, methods=["GET"])
    router.add_api_route("/prompt_sync", prompt_sync, methods=["POST"])
    add_queue_routes(router)  # comfy_queue: /queue, /history
    router.add_api_route("/interrupt", interrupt, methods=["POST"], **EMPTY_200)
    router.add_api_route(
        "/view", view, methods=["GET"]
    )  # comfy_view (and HEAD: routing.answer_head)
    router.add_api_route("/upload/image", upload_image, methods=["POST"])
    router.add_api_route("/upload/mask", upload_mask, methods=["POST"])
    router.add_api_route("/system_stats", system_stats, methods=["GET"])  # comfy_system
    add_catalog_routes(router)  # /object_info, /models, /embeddings, /features


async def post_prompt(request: Request, ctx: Ctx) -> Response:
    body = await json_body(request)
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
    # (NaN and Infinity, which Python's JSON reads, are no number a JSON answer can echo)
    if not isinstance(number, int | float) or isinstance(number, bool) or not isfinite(number):
        number = next(hub.numbers)
        if body.get("front"):
            number = -number
    options: JSON = {"extra_data": extra_data} if extra_data else {}
    if extra_data.get("requirements") is not None:  # comfyrun's: backend labels to match
        options["requirements"] = extra_data["requirements"]
    targets = body.get(PARTIAL_TARGETS)
    if targets is not None:  # the output nodes to run (ComfyUI's editor: "run selected")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise errors.InvalidRequest(
                "partial_execution_targets must be a list of node ids",
                details={PARTIAL_TARGETS: targets},
            )
        options[PARTIAL_TARGETS] = targets
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
    # (every socket hears the queue grow: the store tells the sockets' hub, comfy_clients)
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
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
        return _sync_error("no_prompt", "the body needs a prompt object", None, {})
    try:
        job = await submit_prompt(ctx, body, body["prompt"])
    except errors.ComfyrunError as exc:
        shaped = json.loads(bytes(comfy_error_for(exc).body))
        return _sync_error(
            shaped["error"]["type"], shaped["error"]["message"], None, shaped["node_errors"]
        )
    view = await wait_keyed(
        ctx, request, job.id, min(timeout, ctx.settings.max_wait_s), cookie=True
    )
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


async def interrupt(request: Request, ctx: Ctx) -> Response:
    """{"prompt_id": X} interrupts X if it runs; no id interrupts the running prompts that
    came through this API (other dialects' jobs are left alone)."""
    body = await json_body(request)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    if prompt_id is not None:
        targets = [str(prompt_id)]
    else:
        targets = [
            j.id
            for j in await listed_jobs(ctx, list(ACTIVE))
            if j.metadata.get(cc.META_DIALECT) == cc.DIALECT
        ]
    for job_id in targets:
        job = await ctx.store.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING and not job.waiting:
            with contextlib.suppress(errors.ComfyrunError):
                await ctx.service.cancel(job_id)
    return Response(status_code=200)


async def _upload(
    image: UploadFile, subfolder: str, overwrite: str | None, kind: str, ctx: AppContext
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
            kind=kind,
        )
    except errors.ComfyrunError as exc:
        return comfy_error_for(exc)
    return JSONResponse({"name": name, "subfolder": folder, "type": kind})


async def upload_image(
    ctx: Ctx,
    image: Annotated[UploadFile | None, File()] = None,
    overwrite: Annotated[str | None, Form()] = None,
    subfolder: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "input",
) -> Response:
    if image is None:
        return comfy_error(400, "invalid_request", "no image field")
    return await _upload(image, subfolder, overwrite, type or "input", ctx)


async def upload_mask(
    ctx: Ctx,
    image: Annotated[UploadFile | None, File()] = None,
    overwrite: Annotated[str | None, Form()] = None,
    subfolder: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "input",
    original_ref: Annotated[str | None, Form()] = None,
) -> Response:
    """The image `original_ref` names, with the mask's alpha (compat.comfy_masks)."""
    if image is None:
        return comfy_error(400, "invalid_request", "no image field")
    mask = await image.read(MASK_MAX + 1)
    if len(mask) > MASK_MAX:
        return comfy_error(400, "too_large", f"a mask is at most {MASK_MAX} bytes")
    try:
        name, folder = await store_mask(
            ctx,
            mask,
            filename=image.filename or "",
            subfolder=subfolder,
            original_ref=original_ref,
            overwrite=overwrite is not None and overwrite.lower() in ("true", "1"),
            upload_type=type or "input",
        )
    except errors.ComfyrunError as exc:
        return comfy_error_for(exc)
    return JSONResponse({"name": name, "subfolder": folder, "type": type or "input"})


async def comfy_ws_route(websocket: WebSocket) -> None:
    """/ws?clientId=…, as ComfyUI serves it (a clientId given twice: the first, as aiohttp's
    query reads it; Starlette's `get` gives the last)."""
    given = websocket.query_params.getlist("clientId")
    await comfy_ws(websocket, given[0] if given else None)


async def ws_without_upgrade(request: Request) -> Response:
    """GET /ws as plain HTTP (no Upgrade): a 400, as ComfyUI (aiohttp) answers it, in its
    error shape."""
    return comfy_error(
        400, "invalid_request", "/ws is a websocket: connect with an Upgrade: websocket request"
    )


def build_routers() -> list[APIRouter]:
    """ComfyUI's routes at the root and under /api, the /api/jobs endpoints, and /ws."""
    routers = []
    for prefix in ("", "/api"):
        router = comfy_router(prefix)
        _add_routes(router)
        ws = APIRouter(prefix=prefix, tags=["comfyui"])
        # a plain route: FastAPI's dependency solving for one query parameter was a tenth of
        # the CPU of a /ws connection (ComfyUI's scripts open one a prompt)
        ws.add_websocket_route(f"{prefix}/ws", comfy_ws_route)
        # an API route (the router adds its prefix), so that its 405 (POST /ws) and 400 are
        # in ComfyUI's shape, as the route's tag says
        ws.add_api_route("/ws", ws_without_upgrade, methods=["GET"], include_in_schema=False)
        routers += [router, ws]
    routers.append(jobs_router)
    return routers


__all__ = [
    "build_routers",
    "comfy_error",
    "comfy_error_for",
    "submit_prompt",
]
