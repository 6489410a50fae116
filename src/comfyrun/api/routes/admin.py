"""Admin operations: retention clean-up and requeueing jobs stuck in `running`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from comfyrun.api.context import AppContext, get_ctx, require_admin
from comfyrun.api.schemas import CleanupOut, ResetStuckOut

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v2/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/cleanup", response_model=CleanupOut)
async def cleanup(
    ctx: Ctx, max_age_hours: Annotated[float | None, Query(ge=0)] = None
) -> CleanupOut:
    """Expire finished jobs past retention; delete those finished over `max_age_hours` ago."""
    r = await ctx.service.cleanup(max_age_hours)
    return CleanupOut(expired=r.expired, deleted=r.deleted, files_deleted=r.files_deleted)


@router.post("/reset-stuck", response_model=ResetStuckOut)
async def reset_stuck(
    ctx: Ctx, max_running_hours: Annotated[float, Query(gt=0)] = 2.0
) -> ResetStuckOut:
    """Running jobs started more than `max_running_hours` ago go back to the queue."""
    jobs = await ctx.service.reset_stuck(max_running_hours)
    return ResetStuckOut(requeued=[j.id for j in jobs])


__all__ = ["router"]
