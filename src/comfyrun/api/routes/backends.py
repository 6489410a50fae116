"""The ComfyUI backends this process runs jobs on: GET /api/v2/backends lists them with their
states; an admin drains, resumes, restarts, stops and starts one (POST
/api/v2/backends/{name}/{drain,resume,restart,stop,start}, backends.control).

The routes are served where the backends are: `comfyrun serve`, and a `comfyrun worker`'s HTTP
port. An `api` node runs no backend: it answers the operations with 409, saying where.

What is the operator's (a backend's URL, its log's tail, the text of its last error: internal
addresses, paths, a crash's traceback) is shown to an admin (a config key, a key with the
admin scope, anyone on a server without keys); another key sees each backend's name, state and
load only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from comfyrun.api.context import AppContext, get_ctx, require_admin, require_auth
from comfyrun.api.schemas import BackendList, BackendOut
from comfyrun.api.wire import iso
from comfyrun.backends import control
from comfyrun.config import Role
from comfyrun.errors import Conflict

Ctx = Annotated[AppContext, Depends(get_ctx)]
Force = Annotated[
    bool,
    Query(
        description="at once: the jobs running on the backend are given up as after a crash "
        "and retried (elsewhere, or on this backend once it is back)"
    ),
]

router = APIRouter(tags=["backends"], dependencies=[Depends(require_auth)])
admin_router = APIRouter(tags=["backends"], dependencies=[Depends(require_admin)])


def backend_out(b: Any, *, operator: bool = True) -> BackendOut:
    """A backend as the API shows it; `operator`: with what only an admin sees (its URL, its
    log's tail, its last error and since when)."""
    return BackendOut(
        name=b.name,
        url=b.url if operator else None,
        state=str(b.state),
        inflight=b.inflight,
        jobs_done=b.jobs_done,
        last_error=b.last_error if operator else None,
        managed=b.managed,
        log_tail=list(b.log_tail) if operator else [],
        last_error_at=iso(b.last_error_at) if operator else None,
        draining=bool(getattr(b, "draining", False)),
        kept_stopped=bool(getattr(b, "kept_stopped", False)),
        depth=int(getattr(b, "depth", 2)),
    )


def backend_list(ctx: AppContext) -> BackendList:
    if ctx.pool is None:
        return BackendList(backends=[])
    operator = ctx.principal.admin
    return BackendList(backends=[backend_out(b, operator=operator) for b in ctx.pool.snapshot()])


@router.get("/api/v2/backends", response_model=BackendList)
async def list_backends(ctx: Ctx) -> BackendList:
    return backend_list(ctx)


async def _operate(ctx: AppContext, name: str, act: Callable[..., None], **kw: Any) -> BackendOut:
    if ctx.pool is None:
        if ctx.settings.role is Role.API:
            raise Conflict(
                "this is an API node (`comfyrun api`): its workers run the backends. Send this "
                "to the HTTP port of the worker that runs backend "
                f"{name!r} (`comfyrun worker --port`), with an admin key",
                details={"backend": name, "role": ctx.settings.role.value},
            )
        raise Conflict("this process runs no ComfyUI backend", details={"backend": name})
    backend = control.backend_of(ctx.pool, name)
    act(ctx.pool, backend, **kw)
    await control.holds_kept(ctx.pool)  # answered once a restart of this process keeps it
    return backend_out(backend.info())


@admin_router.post("/api/v2/backends/{name:path}/drain", response_model=BackendOut)
async def drain_backend(ctx: Ctx, name: str) -> BackendOut:
    """Take no new job on the backend; the jobs on it finish there (`resume` undoes it)."""
    return await _operate(ctx, name, control.drain)


@admin_router.post("/api/v2/backends/{name:path}/resume", response_model=BackendOut)
async def resume_backend(ctx: Ctx, name: str) -> BackendOut:
    """Undo a drain or a stop: the backend takes jobs again (a stopped managed one is started
    by the next job)."""
    return await _operate(ctx, name, control.resume)


@admin_router.post("/api/v2/backends/{name:path}/restart", response_model=BackendOut)
async def restart_backend(ctx: Ctx, name: str, force: Force = False) -> BackendOut:
    """A managed backend: its ComfyUI process restarted once the jobs on it are done (it takes
    no new job meanwhile), or at once with `force`. Another backend: its connection (HTTP and
    websocket) closed and opened anew."""
    return await _operate(ctx, name, control.restart, force=force)


@admin_router.post("/api/v2/backends/{name:path}/stop", response_model=BackendOut)
async def stop_backend(ctx: Ctx, name: str, force: Force = False) -> BackendOut:
    """A managed backend: drained, then its ComfyUI process stopped once the jobs on it are
    done (at once with `force`); no job starts it again until `start` or `resume`. Another
    backend: drained (comfyrun has no process of it to stop)."""
    return await _operate(ctx, name, control.stop, force=force)


@admin_router.post("/api/v2/backends/{name:path}/start", response_model=BackendOut)
async def start_backend(ctx: Ctx, name: str) -> BackendOut:
    """A managed backend: its ComfyUI process started now (a stop undone; a drain stays). 409
    for a backend comfyrun does not manage."""
    return await _operate(ctx, name, control.start)


__all__ = ["admin_router", "backend_list", "backend_out", "router"]
