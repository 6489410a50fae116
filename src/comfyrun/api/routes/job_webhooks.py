"""GET /api/v2/jobs/{id}/webhooks: the job's webhook deliveries and every attempt at each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from comfyrun.api.context import AppContext, get_ctx, require_auth
from comfyrun.core.webhook import Delivery, DeliveryState

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v2/jobs", tags=["jobs"], dependencies=[Depends(require_auth)])


class AttemptOut(BaseModel):
    at: float
    duration_s: float
    status_code: int | None = Field(default=None, description="None: no HTTP answer")
    error: str | None = None


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header: the same on every attempt")
    event: str = Field(description="job.succeeded, job.failed or job.canceled")
    url: str
    state: DeliveryState = Field(description="pending, delivered or failed (given up)")
    created_at: float
    next_attempt_at: float | None = Field(description="When a pending delivery is tried next")
    delivered_at: float | None = None
    attempts: list[AttemptOut]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


def delivery_out(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event=d.event,
        url=d.url,
        state=d.state,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at if d.state is DeliveryState.PENDING else None,
        delivered_at=d.delivered_at,
        attempts=[
            AttemptOut(at=a.at, duration_s=a.duration_s, status_code=a.status_code, error=a.error)
            for a in d.attempts
        ],
    )


@router.get("/{job_id}/webhooks", response_model=DeliveryList)
async def job_webhooks(job_id: str, ctx: Ctx) -> DeliveryList:
    await ctx.service.get(job_id)  # 404 for a job this caller cannot see
    return DeliveryList(deliveries=[delivery_out(d) for d in await ctx.store.deliveries(job_id)])


__all__ = ["router"]
