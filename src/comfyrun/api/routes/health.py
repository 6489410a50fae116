"""Liveness (/api/v2/health) and readiness (/ready): no auth, for load balancers and probes."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from comfyrun import __version__
from comfyrun.api.context import AppContext, get_ctx
from comfyrun.api.schemas import HealthOut, ReadyOut
from comfyrun.config import Role
from comfyrun.core.job import COMFY

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["health"])

#: How long /ready waits for the store (a load balancer's probe gives up after a few seconds).
STORE_WAIT_S = 3.0
#: Backend states that can take a job now, or start on demand (a lazy managed backend).
USABLE_STATES = frozenset({"ready", "busy", "stopped"})


@router.get("/api/v2/health", response_model=HealthOut)
async def health(ctx: Ctx) -> HealthOut:
    return HealthOut(version=__version__, role=ctx.settings.role.value)


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(ctx: Ctx) -> JSONResponse:
    """200 when the store answers and can commit a write (store.writable: the outcome of its
    latest commits, or a tiny write where none is recent) and, where this process runs comfy jobs, a backend is ready
    (or is a managed one that starts on demand), and (with `ready_queue_max`) fewer jobs than
    that wait in the queue; 503 otherwise. A worker declared to run only other job types
    (`types` without comfy) needs no backend."""
    store_ok = False
    reason: str | None = "store unreachable"
    try:
        async with asyncio.timeout(STORE_WAIT_S):
            store_ok = await ctx.store.ping()
            cannot_commit = await ctx.store.can_commit() if store_ok else None
    except Exception:  # readiness reports any store failure (or a hang) as "not ready"
        store_ok = False
    else:
        if cannot_commit is not None:
            store_ok, reason = False, "store cannot commit"  # (why: logged by the store)
        elif store_ok:
            reason = None
    usable = 0
    declared = ctx.settings.types
    runs_comfy = declared is None or COMFY in declared
    runs_jobs = ctx.settings.role is not Role.API and runs_comfy
    if runs_jobs and ctx.pool is None and reason is None:
        reason = "no backends are configured"
    if ctx.pool is not None:
        for info in ctx.pool.snapshot():
            state = str(getattr(info, "state", ""))
            held = getattr(info, "draining", False) or getattr(info, "kept_stopped", False)
            managed = getattr(info, "managed", False)
            if state in USABLE_STATES and (state != "stopped" or managed) and not held:
                usable += 1
        if usable == 0 and reason is None:
            reason = "no backend is ready"
    ok = store_ok and (not runs_jobs or usable > 0)
    deepest = ctx.settings.ready_queue_max
    queued: int | None = None
    if ok and deepest is not None and ctx.settings.role is not Role.WORKER:
        try:
            queued = await ctx.service.queue_bound.queued()
        except Exception:  # (as a store that failed the ping)
            ok, store_ok, reason = False, False, "store unreachable"
        else:
            if queued >= deepest:
                ok, reason = False, f"{queued} jobs are queued (ready_queue_max {deepest})"
    body = ReadyOut(ready=ok, store=store_ok, backends_ready=usable, reason=reason, queued=queued)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


__all__ = ["router"]
