"""/api/v2/models: the model cache — list it, pull a file ahead of the jobs that need it, evict
one. Lives where jobs run (`serve` and `worker`); an API-only process answers 503. The cache is
the fleet's (every key's jobs share it, and its listing names each file's sources): an admin's,
as a key's asset pulled into it would leave the key's own view."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from comfyrun.api.context import AppContext, get_ctx, require_admin
from comfyrun.models import ModelCache, parse_model

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(prefix="/api/v2/models", tags=["models"], dependencies=[Depends(require_admin)])


class ModelIn(BaseModel):
    """One model file: where its bytes come from, and the ComfyUI folder and name it takes."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=8192, description="http(s):// or s3://")
    asset_id: str | None = Field(default=None, max_length=255)
    folder: str = Field(..., max_length=64, description="checkpoints, loras, vae, ...")
    name: str = Field(..., max_length=255, description="the file name workflows use")
    hash: str | None = Field(default=None, max_length=80, description="sha256:… or blake3:…")
    refresh: bool = Field(
        default=False,
        description="a URL cached already without a hash is revalidated (a conditional GET) "
        "and its bytes replaced only if they changed; the answer's `refresh` says what happened",
    )


def _cache(ctx: AppContext) -> ModelCache:
    cache: ModelCache | None = ctx.extras.get("models")
    if cache is None:
        raise HTTPException(503, "the model cache lives where jobs run (comfyrun serve or worker)")
    return cache


@router.get("")
async def list_models(ctx: Ctx) -> dict[str, Any]:
    """Every cached file, most recently used first, with the cache's size and budget."""
    cache = _cache(ctx)
    return {
        "models": [m.to_json() for m in cache.list()],
        "total_bytes": cache.total_bytes,
        "budget_bytes": cache.budget_bytes,
    }


@router.post("", status_code=201)
async def pull_model(body: ModelIn, ctx: Ctx) -> dict[str, Any]:
    """Fetch `{url | asset_id, folder, name, hash?, refresh?}` into the cache now (returns
    when done). With `refresh`, a URL without a hash that is cached already is revalidated;
    `refresh` in the answer: content_addressed, fetched, not_modified, unchanged or replaced."""
    cache = _cache(ctx)
    ref = parse_model(body.model_dump(exclude_none=True, exclude={"refresh"}), "model")
    if not body.refresh:
        return (await cache.pull(ref)).to_json()
    model, outcome = await cache.refresh(ref)
    return {**model.to_json(), "refresh": outcome}


@router.delete("/{key:path}")
async def evict_model(key: str, ctx: Ctx) -> dict[str, Any]:
    """Evict `blake3:<hex>`, `sha256:<hex>` or `<folder>/<name>` (409 while a job uses it)."""
    return (await _cache(ctx).remove(key)).to_json()


__all__ = ["router"]
