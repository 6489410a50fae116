"""GET /api/v2/backends: the ComfyUI backends this process runs jobs on, with their states.

What is the operator's (a backend's URL, its log's tail, the text of its last error: internal
addresses, paths, a crash's traceback) is shown to an admin (a config key, a key with the
admin scope, anyone on a server without keys); another key sees each backend's name, state and
load only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.api.schemas import BackendList, BackendOut, iso

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["backends"], dependencies=[Depends(require_auth)])


def backend_list(ctx: AppContext) -> BackendList:
    if ctx.pool is None:
        return BackendList(backends=[])
    operator = ctx.principal.admin
    return BackendList(
        backends=[
            BackendOut(
                name=b.name,
                url=b.url if operator else None,
                state=str(b.state),
                inflight=b.inflight,
                jobs_done=b.jobs_done,
                last_error=b.last_error if operator else None,
                managed=b.managed,
                log_tail=list(b.log_tail) if operator else [],
                last_error_at=iso(b.last_error_at) if operator else None,
            )
            for b in ctx.pool.snapshot()
        ]
    )


@router.get("/api/v2/backends", response_model=BackendList)
async def list_backends(ctx: Ctx) -> BackendList:
    return backend_list(ctx)


__all__ = ["backend_list", "router"]
