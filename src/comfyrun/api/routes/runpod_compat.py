"""RunPod's serverless endpoint API, served by comfyrun: POST /run and /runsync (?wait= ms),
GET /status/{id}, POST /cancel/{id}, POST /retry/{id}, GET /stream/{id}, GET /health and
POST /purge-queue, at the root and under /v2/{endpoint_id}/ (what the `runpod` SDK calls with
runpod.endpoint_url_base = "http://host:port/v2").

The body is worker-comfyui's: {"input": {"workflow", "images": [{"name", "image"}]},
"webhook"?, "policy"?: {"executionTimeout" (ms), "ttl" (ms)}}; an input without a workflow,
sent to an endpoint named after a job type, is a job of that type (its params the input).
POST /run with a top-level
"workflow" instead is the plain variant (plain_compat), and GET /status/{id} answers each job
in the dialect it was submitted through (recorded in its metadata). A thin translator over
JobService.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from comfyrun import errors, jsontext
from comfyrun.api.compat import runpod as rp
from comfyrun.api.context import AppContext, get_ctx, public_base_url, reads, require_auth
from comfyrun.api.key_wait import wait_keyed
from comfyrun.api.routes.jobs import check_webhook_url
from comfyrun.api.routes.plain_compat import (
    deliver_outputs,
    error_response,
    images_to_inputs,
    plain_status_body,
    submit_plain,
)
from comfyrun.core.job import JSON, Job, JobStatus
from comfyrun.service import Submission

Ctx = Annotated[AppContext, Depends(get_ctx)]

#: How long POST /runsync holds the request without ?wait= (RunPod's default, 90 s).
DEFAULT_SYNC_WAIT_MS = 90_000
#: Jobs whose final stream chunk was handed out, remembered per process (oldest forgotten).
STREAMED_REMEMBERED = 10_000


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": "invalid_request"}, status_code=400)


async def _body(request: Request) -> JSON | None:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = jsontext.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _policy(body: JSON) -> tuple[float | None, JSON]:
    """RunPod's policy → (timeout_s, metadata)."""
    policy = body.get("policy")
    if policy is None:
        return None, {}
    if not isinstance(policy, dict):
        raise errors.InvalidRequest("policy must be an object")
    timeout_s: float | None = None
    meta: JSON = {}
    timeout = policy.get("executionTimeout")
    if timeout is not None:
        if not _milliseconds(timeout):
            raise errors.InvalidRequest(
                f"policy.executionTimeout must be a positive number of ms, at most {MAX_MS}"
            )
        timeout_s = float(timeout) / 1000.0
    ttl = policy.get("ttl")
    if ttl is not None:
        if not _milliseconds(ttl):
            raise errors.InvalidRequest(
                f"policy.ttl must be a positive number of ms, at most {MAX_MS}"
            )
        meta["runpod_ttl_ms"] = ttl
    return timeout_s, meta


#: The longest executionTimeout or ttl taken (a week, as the v2 API's timeout_s).
MAX_MS = 7 * 24 * 3600 * 1000


def _milliseconds(value: Any) -> bool:
    """A policy's time: a positive, finite number of ms, up to MAX_MS (NaN and Infinity, which
    Python's JSON reads, meant no limit; an integer past a float's range was a 500)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return 0 < value <= MAX_MS  # (False for NaN; an int of any size compares)


def _start_by(body: JSON) -> float | None:
    """RunPod's policy.ttl (ms, validated by _policy) as the latest time the job may start."""
    policy = body.get("policy")
    ttl = policy.get("ttl") if isinstance(policy, dict) else None
    return time.time() + float(ttl) / 1000.0 if ttl is not None else None


async def submission(ctx: AppContext, body: JSON, endpoint_id: str | None) -> Submission:
    """A RunPod request → a Submission. worker-comfyui's input (a `workflow`) is a comfy job;
    an input without one, sent to an endpoint named after a job type (a handler of this
    process, or a type a live worker serves), is a job of that type whose params are the
    input (what RunPod hands a serverless handler as `job["input"]`), its `images` the job's
    input files."""
    payload = body.get("input")
    job_type = None
    if (
        isinstance(payload, dict)
        and "workflow" not in payload
        and endpoint_id
        and await ctx.service.job_types.known(ctx.store, endpoint_id)
    ):
        job_type = endpoint_id
    sub = runpod_submission(body, endpoint_id=endpoint_id, job_type=job_type)
    hook = sub.options.get("webhook")
    if isinstance(hook, dict):
        # as the v2 API: a URL the server would refuse to call is refused now, not dropped
        # unsaid at delivery (malformed, or an address `webhook_allow` does not open)
        try:
            check_webhook_url(ctx, str(hook["url"]))
        except errors.InputRejected as exc:
            raise errors.InvalidRequest(f"webhook: {exc.message}", details=exc.details) from None
    return sub


def runpod_submission(
    body: JSON,
    *,
    endpoint_id: str | None,
    job_id: str | None = None,
    job_type: str | None = None,
) -> Submission:
    """A RunPod request body → a Submission (raises InvalidRequest); with `job_type`, a job of
    that type whose params are the input."""
    payload = body.get("input")
    if not isinstance(payload, dict):
        raise errors.InvalidRequest('the body needs an "input" object')
    workflow = payload.get("workflow")
    if job_type is None and (not isinstance(workflow, dict) or not workflow):
        raise errors.InvalidWorkflow("input.workflow must be a non-empty object (API format)")
    timeout_s, meta = _policy(body)
    options: JSON = {}
    if job_type is None and payload.get("models") is not None:
        options["models"] = payload["models"]  # checked by the service (comfyrun.models)
    if job_type is None and payload.get("requirements") is not None:  # backend labels (core.fit)
        options["requirements"] = payload["requirements"]  # checked by the service
    start_by = _start_by(body)
    if start_by is not None:
        options["start_by"] = start_by
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str) or not webhook.startswith(("http://", "https://")):
            raise errors.InvalidRequest("webhook must be an http(s) URL")
        options["webhook"] = {"url": webhook}
    metadata: JSON = {rp.META_DIALECT: rp.RUNPOD, **meta}
    if endpoint_id:
        metadata["runpod_endpoint"] = endpoint_id
    inputs = images_to_inputs(payload.get("images"))
    if job_type is not None:
        params = {k: v for k, v in payload.items() if k != "images"}
        return Submission(
            workflow={},
            type=job_type,
            params=params,
            inputs=inputs,
            options=options,
            metadata=metadata,
            timeout_s=timeout_s,
            job_id=job_id,
        )
    assert isinstance(workflow, dict)  # checked above
    return Submission(
        workflow=workflow,
        inputs=inputs,
        options=options,
        metadata=metadata,
        timeout_s=timeout_s,
        job_id=job_id,
    )


async def runpod_body(ctx: AppContext, job: Job, base_url: str | None = None) -> JSON:
    """The job as RunPod's /status answers it (`base_url`: for outputs too large to inline)."""
    if job.status is not JobStatus.SUCCEEDED:
        return rp.runpod_response(job, None)
    return rp.runpod_response(job, await deliver_outputs(ctx, job, base_url))


async def run(request: Request, ctx: Ctx, endpoint_id: str | None = None) -> Response:
    body = await _body(request)
    if body is None:
        return _bad("the body is not a JSON object")
    if "input" not in body and "workflow" in body:
        return await submit_plain(ctx, body)
    try:
        submitted = await ctx.service.submit(await submission(ctx, body, endpoint_id))
    except errors.ComfyrunError as exc:
        return error_response(exc)
    return JSONResponse({"id": submitted.job.id, "status": rp.IN_QUEUE})


async def runsync(
    request: Request,
    ctx: Ctx,
    endpoint_id: str | None = None,
    wait: Annotated[int | None, Query(ge=1000, le=300_000)] = None,
) -> Response:
    body = await _body(request)
    if body is None:
        return _bad("the body is not a JSON object")
    try:
        submitted = await ctx.service.submit(await submission(ctx, body, endpoint_id))
    except errors.ComfyrunError as exc:
        return error_response(exc)
    wait_s = min((wait or DEFAULT_SYNC_WAIT_MS) / 1000.0, ctx.settings.max_wait_s)
    view = await wait_keyed(ctx, request, submitted.job.id, wait_s)
    return JSONResponse(await runpod_body(ctx, view.job, public_base_url(request)))


async def _job(ctx: AppContext, job_id: str) -> Job | JSONResponse:
    job = await ctx.service.job(job_id)  # (one being retried here is waited for, not a 404)
    if job is None:
        return JSONResponse(
            {"error": f"job {job_id} not found", "code": "not_found"}, status_code=404
        )
    return job


@reads  # (POST too, as RunPod's)
async def status(
    job_id: str, request: Request, ctx: Ctx, endpoint_id: str | None = None
) -> Response:
    job = await _job(ctx, job_id)
    if isinstance(job, Response):
        return job
    if rp.dialect_of(job) == rp.PLAIN:
        return JSONResponse(await plain_status_body(ctx, job, public_base_url(request)))
    return JSONResponse(await runpod_body(ctx, job, public_base_url(request)))


@reads
async def stream(
    job_id: str, request: Request, ctx: Ctx, endpoint_id: str | None = None
) -> Response:
    job = await _job(ctx, job_id)
    if isinstance(job, Response):
        return job
    # RunPod hands each stream chunk out once; the final output is this job's only chunk
    streamed: dict[str, None] = ctx.extras.setdefault("runpod_streamed", {})
    output = None
    if job.status is JobStatus.SUCCEEDED and job.id not in streamed:
        output = await deliver_outputs(ctx, job, public_base_url(request))
        streamed[job.id] = None
        while len(streamed) > STREAMED_REMEMBERED:
            del streamed[next(iter(streamed))]
    return JSONResponse(rp.stream_response(job, output))


async def cancel(job_id: str, ctx: Ctx, endpoint_id: str | None = None) -> Response:
    try:
        view = await ctx.service.cancel(job_id)
    except errors.ComfyrunError as exc:
        return error_response(exc)
    # RunPod answers a cancel CANCELLED at once; a running job here is being stopped (its
    # backend interrupted), and /status says IN_PROGRESS until it has
    status = rp.CANCELLED if view.job.status is JobStatus.CANCELING else None
    return JSONResponse({"id": job_id, "status": status or rp.runpod_status(view.job)})


async def retry(job_id: str, ctx: Ctx, endpoint_id: str | None = None) -> Response:
    """Run a FAILED, TIMED_OUT or CANCELLED job again under the same id."""
    job = await _job(ctx, job_id)
    if isinstance(job, Response):
        return job
    if rp.runpod_status(job) not in (rp.FAILED, rp.TIMED_OUT, rp.CANCELLED):
        return JSONResponse(
            {
                "error": f"job {job_id} is {rp.runpod_status(job)}; only failed jobs are retried",
                "code": "conflict",
            },
            status_code=400,
        )
    try:  # checked before the failed job is replaced: one that cannot run again stays
        submitted = await ctx.service.run_again(job)
    except errors.ComfyrunError as exc:
        return error_response(exc)
    return JSONResponse({"id": submitted.job.id, "status": rp.IN_QUEUE})


async def health(ctx: Ctx, endpoint_id: str | None = None) -> JSON:
    counts = await ctx.store.counts()
    retried = await ctx.store.retrying()
    backends: list[Any] = ctx.pool.snapshot() if ctx.pool is not None else []
    idle = sum(1 for b in backends if str(b.state) == "ready" and not b.inflight)
    running = sum(1 for b in backends if b.inflight)
    return rp.health(counts, retried=retried, workers_idle=idle, workers_running=running)


async def purge_queue(ctx: Ctx, endpoint_id: str | None = None) -> JSON:
    """Cancel every queued job (running ones keep going, as on RunPod), including a claimed
    one whose prompt still waits in a backend's queue (shown IN_QUEUE; it is canceled once its
    worker has taken the prompt back, so it is not counted in `removed`)."""
    removed = 0
    held = await ctx.service.list_jobs(statuses=[JobStatus.RUNNING], limit=500)
    for job in held.jobs:
        if job.waiting:
            with contextlib.suppress(errors.ComfyrunError):
                await ctx.service.cancel(job.id)
    cursor: str | None = None
    while True:  # newest first, page after page: the jobs queued meanwhile stay queued
        page = await ctx.service.list_jobs(statuses=[JobStatus.QUEUED], limit=500, cursor=cursor)
        for job in page.jobs:
            try:  # counted where this purge canceled it (two at once counted each job twice)
                removed += await ctx.service.cancel_queued(job.id)
            except errors.ComfyrunError:
                continue  # (one that cannot be canceled now is passed over, not retried)
        cursor = page.next_cursor
        if cursor is None or not page.jobs:
            break
    return {"removed": removed, "status": "completed"}


def _add(router: APIRouter) -> None:
    router.add_api_route("/run", run, methods=["POST"])
    router.add_api_route("/runsync", runsync, methods=["POST"])
    # one route per method: each gets its own OpenAPI operation id
    for method in ("GET", "POST"):
        router.add_api_route("/status/{job_id}", status, methods=[method])
        router.add_api_route("/stream/{job_id}", stream, methods=[method])
    router.add_api_route("/cancel/{job_id}", cancel, methods=["POST"])
    router.add_api_route("/retry/{job_id}", retry, methods=["POST"])
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/purge-queue", purge_queue, methods=["POST"])


def build_routers() -> list[APIRouter]:
    """The endpoint API at the root and under /v2/{endpoint_id}."""
    routers = []
    for prefix in ("", "/v2/{endpoint_id}"):
        router = APIRouter(prefix=prefix, tags=["runpod"], dependencies=[Depends(require_auth)])
        _add(router)
        routers.append(router)
    return routers


__all__ = ["build_routers", "runpod_submission"]
