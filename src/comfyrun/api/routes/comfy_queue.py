"""ComfyUI's queue and history, and its newer /api/jobs endpoints: views of the store (a prompt
is a job; its prompt_id is the job id)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from comfyrun import errors
from comfyrun.api.compat import comfy as cc
from comfyrun.api.compat.comfy_socket import relay_hub
from comfyrun.api.context import AppContext, require_comfy_auth
from comfyrun.api.routes import comfy_common as common
from comfyrun.api.routes.comfy_common import (
    EMPTY_200,
    Ctx,
    comfy_error,
    json_body,
    listed_jobs,
)
from comfyrun.core.job import TERMINAL, Job, JobStatus
from comfyrun.service import JobView
from comfyrun.store.base import JobStamp, JobStore, QueueEntry


def add_queue_routes(router: APIRouter) -> None:
    router.add_api_route("/queue", get_queue, methods=["GET"])
    router.add_api_route("/queue", post_queue, methods=["POST"], **EMPTY_200)
    router.add_api_route("/history", get_history, methods=["GET"])
    router.add_api_route("/history/{prompt_id}", get_history_item, methods=["GET"])
    router.add_api_route("/history", post_history, methods=["POST"], **EMPTY_200)


class RenderedItems:
    """JSON items rendered once (bytes), by job id, each with the version of the job it was
    rendered from: asked again for the same version, the bytes are reused; for another, it is
    rendered again. The least recently asked for are dropped past `max_bytes`."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[Hashable, bytes]] = OrderedDict()

    def _rendered(self, job_id: str, version: Hashable, render: Callable[[], bytes]) -> bytes:
        known = self._known(job_id, version)
        if known is not None:
            return known
        data = render()
        self._drop(job_id)
        self._items[job_id] = (version, data)
        self.size += len(data)
        while self.size > self.max_bytes and self._items:
            self._drop(next(iter(self._items)))
        return data

    def _known(self, job_id: str, version: Hashable) -> bytes | None:
        """The bytes rendered from this version of the job, if they are kept."""
        known = self._items.get(job_id)
        if known is None or known[0] != version:
            return None
        self._items.move_to_end(job_id)
        return known[1]

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, job_id: str) -> None:
        gone = self._items.pop(job_id, None)
        if gone is not None:
            self.size -= len(gone[1])


class QueueItems(RenderedItems):
    """The /queue items of queued jobs: a queued job's item does not change until it is
    claimed, and ComfyUI's editor reloads /queue on each change of the queue, so each is
    rendered (its workflow decoded and encoded) once, not on every reload (again when its
    outputs changed, or when it is another job submitted under the same id)."""

    def item(self, entry: QueueEntry) -> bytes:
        if entry.status is not JobStatus.QUEUED:
            return _render(entry)  # running, or held: few, and its outputs may grow
        return self._rendered(entry.id, _version(entry), lambda: _render(entry))

    async def items(self, store: JobStore, entries: list[QueueEntry]) -> list[tuple[bool, bytes]]:
        """(running, item) of each entry, queued ones listed without their bodies
        (`queue(bodies=False)`): those kept are taken from the listing alone, the others'
        bodies read at once (queue_bodies) and rendered. A job gone meanwhile is left out."""
        kept = {
            e.id: data
            for e in entries
            if e.raw is None and (data := self._known(e.id, _version(e))) is not None
        }
        missing = [e.id for e in entries if e.raw is None and e.id not in kept]
        bodies = await store.queue_bodies(missing) if missing else {}
        out = []
        for e in entries:
            data = kept.get(e.id)
            if data is None:
                if e.raw is None and (raw := bodies.get(e.id)) is None:
                    continue
                data = self.item(e if e.raw is not None else dataclasses.replace(e, raw=raw))
            out.append((e.status is not JobStatus.QUEUED and not e.waiting, data))
        return out


class HistoryItems(RenderedItems):
    """The /history entries of finished jobs: a finished job's entry changes no more (a job
    run again under its id, RunPod's /retry, finishes anew), so each is rendered once, not on
    every listing."""

    def entry(self, job: Job) -> bytes:
        version = (job.finished_at, job.status, job.attempts)
        return self._rendered(job.id, version, lambda: _render_history(job))

    def known(self, stamp: JobStamp) -> bytes | None:
        """The entry of the job `stamp` names, if it is kept for that version of the job."""
        return self._known(stamp.id, (stamp.finished_at, stamp.status, stamp.attempts))

    async def entries(self, store: JobStore, stamps: list[JobStamp]) -> list[tuple[str, bytes]]:
        """(id, entry) of the jobs `stamps` names, in their order: those kept from their
        stamps alone, the others (new, or changed since) read whole, at once, and rendered. A
        job gone meanwhile is left out."""
        kept = {s.id: data for s in stamps if (data := self.known(s)) is not None}
        missing = [s.id for s in stamps if s.id not in kept]
        read = {j.id: j for j in await store.get_many(missing)} if missing else {}
        out = []
        for s in stamps:
            data = kept.get(s.id)
            if data is None and (job := read.get(s.id)) is not None and job.terminal:
                data = self.entry(job)
            if data is not None:
                out.append((s.id, data))
        return out


def _version(entry: QueueEntry) -> tuple[float, tuple[str, ...]]:
    """What tells a queued job's item from an earlier one's (another job under its id, or
    outputs committed by an earlier attempt)."""
    return (entry.created_at, entry.output_nodes)


def _render(entry: QueueEntry) -> bytes:
    return json.dumps(cc.queue_entry_item(entry)).encode()


def _render_history(job: Job) -> bytes:
    return json.dumps(cc.history_entry(job)).encode()


def queue_items(ctx: AppContext) -> QueueItems:
    """The app's cache of rendered queue items (shared by every key's view of the app)."""
    items: QueueItems = ctx.extras.setdefault("comfy_queue_items", QueueItems())
    return items


async def committed(ctx: AppContext, job_id: str | None = None) -> None:
    """Once the commits of the jobs whose end a /ws client of this process was told as they
    began (dispatch.relay: of `job_id`, or of every job) are over: a listing read after the
    end never shows the job still running."""
    hub = relay_hub(ctx)
    if hub is not None:
        await hub.committed(job_id)


def told_end(ctx: AppContext, job_id: str) -> Job | None:
    """The job a /ws client of this process was just told ended (succeeded), as its commit,
    under way, writes it (dispatch.relay), where this view of the service shows it."""
    hub = relay_hub(ctx)
    job = None if hub is None else hub.told(job_id)
    return job if job is not None and ctx.service.shows(job) else None


def history_items(ctx: AppContext) -> HistoryItems:
    """The app's cache of rendered history entries (shared by every key's view of the app)."""
    items: HistoryItems = ctx.extras.setdefault("comfy_history_items", HistoryItems())
    return items


async def get_queue(ctx: Ctx) -> Response:
    """ComfyUI's queue: the prompts running, then those pending in the order they will run
    (a claimed job whose prompt waits in a backend's queue first; at most `common.MAX_LISTED`
    queued ones, from the head of the queue)."""
    await committed(ctx)
    entries = await ctx.store.queue(limit=common.MAX_LISTED, bodies=False)
    listed = await queue_items(ctx).items(ctx.store, entries)
    running = [item for is_running, item in listed if is_running]
    pending = [item for is_running, item in listed if not is_running]
    body = b"".join(
        (
            b'{"queue_running": [',
            b", ".join(running),
            b'], "queue_pending": [',
            b", ".join(pending),
            b"]}",
        )
    )
    return Response(body, media_type="application/json")


async def post_queue(request: Request, ctx: Ctx) -> Response:
    """{"delete": [ids]} removes those pending prompts, {"clear": true} every pending one; a
    removed prompt never reaches the history, as in ComfyUI."""

    async def pending() -> list[str]:
        entries = await ctx.store.queue(limit=common.MAX_LISTED, bodies=False)
        return [e.id for e in entries if e.status is JobStatus.QUEUED or e.waiting]

    async def clear() -> None:
        counts = await ctx.store.counts(unfinished=True)
        await _drop_listed(counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING], pending, drop)

    async def drop(job_id: str) -> None:
        await _drop_pending(ctx, job_id)

    return await _clear_or_delete(request, clear, drop)


async def _clear_or_delete(
    request: Request, clear: Callable[[], Awaitable[None]], drop: Callable[[str], Awaitable[None]]
) -> Response:
    """POST /queue's and /history's body: {"clear": true} and/or {"delete": [ids]}."""
    body = await json_body(request)
    if not isinstance(body, dict):
        return comfy_error(400, "invalid_request", "the body is not a JSON object")
    if body.get("clear"):
        await clear()
    delete = body.get("delete")
    if isinstance(delete, list):
        for job_id in [str(i) for i in delete]:
            await drop(job_id)
    return Response(status_code=200)


async def _drop_listed(
    total: int, listed: Callable[[], Awaitable[list[str]]], drop: Callable[[str], Awaitable[None]]
) -> None:
    """`drop` every job `listed` gives, however many (one listing shows `common.MAX_LISTED`):
    listed again until it gives none new, at most as many times as `total` jobs (those at the
    start) fill, so jobs added meanwhile do not keep the request going."""
    tried: set[str] = set()
    for _ in range(1 + total // common.MAX_LISTED):
        ids = [job_id for job_id in await listed() if job_id not in tried]
        if not ids:
            return
        for job_id in ids:
            tried.add(job_id)
            await drop(job_id)


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
    max_items: Annotated[int | None, Query()] = None,
    offset: Annotated[int, Query()] = -1,
) -> Response:
    """Finished prompts (the newest 1000 at most), oldest first, as ComfyUI lists them:
    `max_items=N` alone (a negative offset) gives the newest N, read alone (the editor asks
    for its last 64 on each change of the queue); `offset=k` counts from the oldest. Each
    entry is rendered once (HistoryItems). `max_items` of 0 or less gives what ComfyUI's
    loop gives: none, or with an offset the one entry there (it was a 400)."""
    if max_items is not None and max_items <= 0:
        if offset < 0:
            return Response(b"{}", media_type="application/json")
        max_items = 1
    await committed(ctx)
    terminal = sorted(TERMINAL)
    if max_items is not None and offset < 0:
        limit = min(max_items, common.MAX_LISTED)
        stamps = await ctx.store.stamps(statuses=terminal, limit=limit)
        stamps.reverse()  # oldest first
    else:
        stamps = await ctx.store.stamps(statuses=terminal, limit=common.MAX_LISTED)
        stamps.reverse()
        start = max(0, offset)
        stamps = stamps[start : None if max_items is None else start + max_items]
    entries = await history_items(ctx).entries(ctx.store, stamps)
    body = b", ".join(json.dumps(job_id).encode() + b": " + data for job_id, data in entries)
    return Response(b"{" + body + b"}", media_type="application/json")


async def get_history_item(prompt_id: str, ctx: Ctx) -> dict[str, Any]:
    job = told_end(ctx, prompt_id)
    if job is None:
        await committed(ctx, prompt_id)
        job = await ctx.service.job(prompt_id)  # a prompt just finished is at hand, not re-read
    if job is None or not job.terminal:
        return {}
    return {job.id: cc.history_entry(job)}


async def post_history(request: Request, ctx: Ctx) -> Response:
    """{"delete": [ids]} removes those finished prompts, {"clear": true} every one."""

    async def finished() -> list[str]:
        return [s.id for s in await ctx.store.stamps(statuses=sorted(TERMINAL))]

    async def clear() -> None:
        counts = await ctx.store.counts()
        await _drop_listed(sum(counts[s] for s in TERMINAL), finished, drop)

    async def drop(job_id: str) -> None:
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await ctx.service.delete(job_id)

    return await _clear_or_delete(request, clear, drop)


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
    await committed(ctx)
    statuses = cc.statuses_for(names) if names else list(JobStatus)
    wanted = offset + limit + 1
    if names and JobStatus.RUNNING in statuses:
        # a running job is pending while its prompt waits in a backend's queue, else in
        # progress: read them all (few: one or two per backend) and keep those asked for
        others: list[JobStatus] = [s for s in statuses if s is not JobStatus.RUNNING]
        jobs: list[Job] = await listed_jobs(ctx, others, limit=wanted) if others else []
        jobs += [
            j for j in await listed_jobs(ctx, [JobStatus.RUNNING]) if cc.job_status(j) in names
        ]
        jobs = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)[:wanted]
    else:
        jobs = await listed_jobs(ctx, statuses, limit=wanted)
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
    await committed(ctx, job_id)
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


__all__ = ["add_queue_routes", "jobs_router"]
