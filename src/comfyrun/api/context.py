"""What the app's lifespan opens, handed to routes through `request.app.state.ctx`."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import HTTPException, Request

from comfyrun.config import Settings
from comfyrun.service import JobService
from comfyrun.store.base import JobStore


class OutputFiles(Protocol):
    """The part of comfyrun.outputs.OutputStorage the API uses."""

    scheme: str

    def open(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]: ...

    async def url(
        self, key: str, *, expires_s: int | None = None
    ) -> tuple[str | None, float | None]: ...

    async def stat(self, key: str) -> Any: ...

    async def read_small(self, key: str, max_bytes: int) -> tuple[Any, bytes | None] | None: ...

    async def delete_prefix(self, prefix: str) -> int: ...


@dataclass
class AppContext:
    settings: Settings
    store: JobStore
    service: JobService
    storage: OutputFiles | None = None
    pool: Any = None  # comfyrun.backends.pool.BackendPool, when this process runs jobs
    dispatcher: Any = None
    assets: Any = None  # comfyrun.assets.AssetService
    webhooks: Any = None  # comfyrun.api.webhooks.WebhookSender, where this process has an API
    templates: Any = None  # comfyrun.templates.TemplateService
    batches: Any = None  # comfyrun.templates.batches.BatchService
    catalog: Any = None  # comfyrun.backends.catalog.BackendCatalog: what the backends can run
    emulator_urls: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)


def app_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_ctx(request: Request) -> AppContext:
    """The dependency (async: a plain `def` dependency costs a thread-pool hop a request)."""
    return app_ctx(request)


def get_service(request: Request) -> JobService:
    return app_ctx(request).service


def public_base_url(request: Request) -> str:
    """The origin clients reach this server at: settings.public_url, else the request's."""
    configured = app_ctx(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


async def require_auth(request: Request) -> None:
    """With api_keys configured, every protected route needs `Authorization: Bearer <key>`."""
    keys = app_ctx(request).settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        for key in keys:
            if hmac.compare_digest(token.strip().encode(), key.encode()):
                return
    raise HTTPException(
        status_code=401,
        detail={"code": "unauthorized", "message": "missing or invalid bearer token"},
        headers={"WWW-Authenticate": "Bearer"},
    )


__all__ = [
    "AppContext",
    "OutputFiles",
    "app_ctx",
    "get_ctx",
    "get_service",
    "public_base_url",
    "require_auth",
]
