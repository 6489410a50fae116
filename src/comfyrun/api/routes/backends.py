"""GET /api/v2/backends: the ComfyUI backends this process runs jobs on, with their states."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.api.schemas import BackendList, BackendOut

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["backends"], dependencies=[Depends(require_auth)])


def backend_list(ctx: AppContext) -> BackendList:
    if ctx.pool is None:
        return BackendList(backends=[])
    return BackendList(
        backends=[
            BackendOut(
                name=b.name,
                url=b.url,
                state=str(b.state),
                inflight=b.inflight,
                jobs_done=b.jobs_done,
                last_error=b.last_error,
                managed=b.managed,
                log_tail=list(b.log_tail),
            )
            for b in ctx.pool.snapshot()
        ]
    )


@router.get("/api/v2/backends", response_model=BackendList)
async def list_backends(ctx: Ctx) -> BackendList:
    return backend_list(ctx)


__all__ = ["backend_list", "router"]
