"""API keys, for admins: POST /api/v2/admin/keys mints one (the key is in that answer only),
GET lists them with their quota and usage, DELETE revokes one (its jobs stay, still its own)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from comfyrun.api.context import AppContext, get_ctx, require_admin
from comfyrun.core.tenancy import ApiKey, Quota, Scope, mint_key
from comfyrun.errors import NotFound

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(
    prefix="/api/v2/admin/keys", tags=["admin"], dependencies=[Depends(require_admin)]
)


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_queued: int | None = Field(default=None, ge=0, description="Queued or running jobs")
    per_minute: int | None = Field(default=None, ge=0, description="Submissions in any 60 s")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.SUBMIT, Scope.READ])
    quota: QuotaIn | None = None


class UsageOut(BaseModel):
    jobs: int = Field(description="Jobs submitted")
    gpu_seconds: float = Field(description="Seconds its jobs held a backend")
    unfinished: int = Field(description="Its queued or running jobs now")


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    quota: QuotaIn
    created_at: float
    revoked_at: float | None = None
    usage: UsageOut


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


class KeyList(BaseModel):
    keys: list[KeyOut]


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        scopes=sorted(key.scopes),
        quota=QuotaIn(max_queued=key.quota.max_queued, per_minute=key.quota.per_minute),
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        usage=UsageOut(
            jobs=key.jobs_submitted,
            gpu_seconds=round(key.gpu_seconds, 3),
            unfinished=key.unfinished,
        ),
    )


@router.post("", status_code=201, response_model=NewKeyOut)
async def create_key(body: KeyIn, ctx: Ctx) -> NewKeyOut:
    key_id, secret, key_hash = mint_key()
    q = body.quota or QuotaIn()
    key = ApiKey(
        id=key_id,
        name=body.name,
        key_hash=key_hash,
        scopes=frozenset(body.scopes),
        quota=Quota(max_queued=q.max_queued, per_minute=q.per_minute),
        created_at=time.time(),
    )
    await ctx.store.create_api_key(key)
    return NewKeyOut(**key_out(key).model_dump(), key=secret)


@router.get("", response_model=KeyList)
async def list_keys(ctx: Ctx) -> KeyList:
    return KeyList(keys=[key_out(k) for k in await ctx.store.list_api_keys()])


@router.get("/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, ctx: Ctx) -> KeyOut:
    key = await ctx.store.get_api_key(key_id)
    if key is None:
        raise NotFound(f"key {key_id} not found", details={"key_id": key_id})
    return key_out(key)


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: str, ctx: Ctx) -> Response:
    if not await ctx.store.revoke_api_key(key_id):
        raise NotFound(f"no active key {key_id}", details={"key_id": key_id})
    if ctx.auth is not None:
        ctx.auth.forget(key_id)
    return Response(status_code=204)


__all__ = ["router"]
