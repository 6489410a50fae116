"""GET /api/v2/stats: job counts by status, queue depth, age of the oldest queued job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.api.schemas import StatsOut

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["stats"], dependencies=[Depends(require_auth)])


@router.get("/api/v2/stats", response_model=StatsOut)
async def stats(ctx: Ctx) -> StatsOut:
    s = await ctx.service.stats()
    return StatsOut(
        counts=s.counts,
        queue_depth=s.queue_depth,
        running=s.running,
        oldest_queued_age_s=s.oldest_queued_age_s,
    )


__all__ = ["router"]
