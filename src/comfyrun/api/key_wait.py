"""A request held until its job ends (`?wait`, RunPod's /runsync, ComfyUI's synchronous prompt)
answers `401` once its API key is revoked meanwhile, as the event streams end
(api.context.key_still_valid): the job keeps running, it is the key that is gone."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from comfyrun.api.context import KEY_RECHECK_S, AppContext, key_still_valid
from comfyrun.job_watch import JobView


def revoked() -> HTTPException:
    """The 401 a request whose key went meanwhile answers (each dialect shapes it)."""
    return HTTPException(
        status_code=401,
        detail={"code": "unauthorized", "message": "the API key was revoked"},
        headers={"WWW-Authenticate": "Bearer"},
    )


async def wait_keyed(
    ctx: AppContext, conn: HTTPConnection, job_id: str, wait_s: float, *, cookie: bool = False
) -> JobView:
    """`ctx.service.wait(job_id, wait_s)`, its key checked every KEY_RECHECK_S and once more
    before the answer (a minted key; a config key, or none on an open server, is never
    revoked); raises `revoked()` once the key is no longer valid. `cookie`: the request may
    have presented its key as the ComfyUI editor's cookie (the ComfyUI routes)."""
    if ctx.principal.key_id is None:
        return await ctx.service.wait(job_id, wait_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait_s)
    while True:
        span = min(KEY_RECHECK_S, max(0.0, deadline - loop.time()))
        view = await ctx.service.wait(job_id, span)
        if not await key_still_valid(conn, ctx.principal, cookie=cookie):
            raise revoked()
        if view.job.terminal or loop.time() >= deadline:
            return view


__all__ = ["revoked", "wait_keyed"]
