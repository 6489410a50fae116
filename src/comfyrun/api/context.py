"""What the app's lifespan opens, handed to routes through `request.app.state.ctx`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from comfyrun.api.auth import Authenticator
from comfyrun.api.tenancy import OwnedStore
from comfyrun.config import Settings
from comfyrun.core.tenancy import ADMIN, Principal, Scope
from comfyrun.service import JobService
from comfyrun.store.base import JobStore
from comfyrun.templates.batches import BatchService

E = TypeVar("E", bound=Callable[..., Any])


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
    auth: Authenticator | None = None
    principal: Principal = ADMIN

    def scoped(self, principal: Principal) -> AppContext:
        """This context as `principal` sees it: an admin sees everything; any other key sees
        the store, the service, the assets, the templates and the batches through its own
        OwnedStore."""
        if principal.owner is None:
            return self
        store = OwnedStore(self.store, principal)
        assets = self.assets.for_owner(principal.owner) if self.assets is not None else None
        checker = self.extras.get("input_checker")
        service = self.service.using(
            store,
            check_inputs=checker(assets) if checker and assets else None,
            owner=principal.owner,
        )
        templates = self.templates.using(service) if self.templates is not None else None
        return dataclasses.replace(
            self,
            store=store,
            service=service,
            assets=assets,
            templates=templates,
            batches=BatchService(templates, service) if templates is not None else None,
            principal=principal,
        )


def app_ctx(request: HTTPConnection) -> AppContext:
    """The app's context as the request's caller sees it (set by `require_auth`)."""
    ctx: AppContext = request.app.state.ctx
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return ctx.scoped(principal)
    return ctx


async def get_ctx(request: Request) -> AppContext:
    """The dependency (async: a plain `def` dependency costs a thread-pool hop a request)."""
    return app_ctx(request)


def get_service(request: Request) -> JobService:
    return app_ctx(request).service


def public_base_url(request: Request) -> str:
    """The origin clients reach this server at: settings.public_url, else the request's."""
    configured = request.app.state.ctx.settings.public_url
    if configured:
        return str(configured).rstrip("/")
    scope = request.scope
    key = (
        scope.get("scheme"),
        scope.get("server"),
        request.headers.get("host"),
        scope.get("app_root_path", scope.get("root_path", "")),
    )
    found = _BASE_URLS.get(key)
    if found is None:
        if len(_BASE_URLS) >= BASE_URLS_KEPT:  # the Host header is the client's: bounded
            _BASE_URLS.clear()
        found = _BASE_URLS[key] = str(request.base_url).rstrip("/")
    return found


#: The request origins worked out so far (Starlette builds a URL object for each request's
#: base_url, parsing what a request's scheme, server, Host header and root path give: the
#: same few of them answer every request), at most BASE_URLS_KEPT.
_BASE_URLS: dict[tuple[Any, ...], str] = {}
BASE_URLS_KEPT = 256


#: The cookie ComfyUI's editor keeps its API key in (set by the key page, api.editor.keypage).
EDITOR_COOKIE = "comfyrun_key"


def bearer_token(conn: HTTPConnection, *, query: bool = False, cookie: bool = False) -> str | None:
    """The `Authorization: Bearer` token (or, where `query`, a `?token=` one; where `cookie`,
    the editor's key cookie on a same-origin request)."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query and (token := conn.query_params.get("token", "")):
        return token
    if cookie and (token := conn.cookies.get(EDITOR_COOKIE, "")) and same_origin(conn):
        return token
    return None


def same_origin(conn: HTTPConnection) -> bool:
    """Whether a request (or websocket handshake) comes from this server's own pages: no
    Origin header (not a cross-site browser request), or one naming the Host asked for or the
    configured public URL. A cookie is honoured only then (no cross-site request forgery)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    if netloc and netloc == conn.headers.get("host", "").lower():
        return True
    public_url = conn.app.state.ctx.settings.public_url
    return bool(public_url) and netloc == urlsplit(public_url).netloc.lower()


async def authenticate(
    conn: HTTPConnection, *, query: bool = False, cookie: bool = False
) -> Principal | None:
    """The caller of `conn`: an admin on a server without config keys or with a config key,
    else the API key it presents; None when it presents no valid key."""
    ctx: AppContext = conn.app.state.ctx
    if ctx.auth is None:
        return ADMIN
    return await ctx.auth.principal(bearer_token(conn, query=query, cookie=cookie))


#: How often a stream that lasts (an SSE stream, ComfyUI's /ws) checks that its API key was not
#: revoked meanwhile (a revoked key's open stream is ended).
KEY_RECHECK_S = 5.0


async def key_still_valid(conn: HTTPConnection, principal: Principal, *, cookie: bool) -> bool:
    """Whether the API key a long-lived stream was opened with is still valid (a config key,
    or no key on an open server, always is)."""
    if principal.key_id is None:
        return True
    return await authenticate(conn, query=cookie, cookie=cookie) is not None


#: The endpoints that only read though their method is not GET (RunPod's POST /status): they
#: need the `read` scope, where any other method needs `submit`.
_READING: set[Callable[..., Any]] = set()


def reads(endpoint: E) -> E:
    """Mark `endpoint` as one that reads (the scope it needs is `read`) whatever its method."""
    _READING.add(endpoint)
    return endpoint


def needed_scope(request: Request) -> Scope:
    """The scope a request needs: `read` to read (GET, HEAD, an endpoint marked `reads`),
    `submit` for anything that changes something (submitting, cancelling, deleting,
    uploading, saving the editor's files and settings…)."""
    if request.method in ("GET", "HEAD") or request.scope.get("endpoint") in _READING:
        return Scope.READ
    return Scope.SUBMIT


async def require_auth(request: Request) -> None:
    """Every protected route: a valid key (`Authorization: Bearer <key>`) when the server has
    config keys, with the `read` scope for reading and `submit` for any write
    (`needed_scope`). The caller's principal scopes the context `get_ctx` hands the route."""
    await _require(request, cookie=False)


async def require_comfy_auth(request: Request) -> None:
    """ComfyUI's routes, which its web editor calls: `require_auth`, where the editor's key
    cookie also counts (the editor sends no Authorization header)."""
    await _require(request, cookie=True)


async def _require(request: Request, *, cookie: bool) -> None:
    principal = await authenticate(request, cookie=cookie)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail={"code": "unauthorized", "message": "missing or invalid bearer token"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    scope = needed_scope(request)
    if not principal.may(scope):
        raise HTTPException(
            status_code=403,
            detail={"code": "forbidden", "message": f"this key lacks the {scope} scope"},
        )


async def require_admin(request: Request) -> None:
    """Admin routes: a config key, or a minted key with the `admin` scope."""
    await require_auth(request)
    if not request.state.principal.admin:
        raise HTTPException(
            status_code=403,
            detail={"code": "forbidden", "message": "this route needs an admin key"},
        )


__all__ = [
    "EDITOR_COOKIE",
    "AppContext",
    "OutputFiles",
    "app_ctx",
    "authenticate",
    "bearer_token",
    "get_ctx",
    "get_service",
    "needed_scope",
    "public_base_url",
    "reads",
    "require_admin",
    "require_auth",
    "require_comfy_auth",
    "same_origin",
]
