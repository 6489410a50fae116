"""Request-body limits on every route of every dialect, as one ASGI middleware.

- A `Content-Length` over the limit is refused (413) before a byte of the body is read.
- A chunked (or lying) body is counted while it is read and refused (413) once it passes the
  limit; whatever the app made of the cut-off body is thrown away.
- A body that stalls (no bytes for `idle_timeout_s`) or dribbles in (not complete within
  `total_timeout_s`) is refused with 408; the connection is closed, so nothing waits for it.

Uploads (`/api/v2/assets`, ComfyUI's `/upload/...`) have their own, larger limit. Refusals are
in the error shape of the dialect the path belongs to (see `dialect_for`). The header-size cap
is enforced twice: the HTTP server bounds what it buffers (see
`comfyrun.cli.server.serving_app`) and this middleware refuses (431) headers over the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyrun.api.errors import envelope

#: Paths whose bodies are file uploads (the larger limit).
UPLOAD_PREFIXES = ("/api/v2/assets", "/upload/", "/api/upload/")
#: ComfyUI's routes, at / and under /api (except comfyrun's own /api/v1 and /api/v2).
_COMFY_ROOTS = (
    "/prompt",
    "/queue",
    "/history",
    "/interrupt",
    "/view",
    "/upload",
    "/object_info",
    "/system_stats",
    "/features",
    "/ws",
    "/free",
)
#: RunPod's routes (also under /v2/{endpoint_id}), the plain /run family and the task API.
_RUNPOD_ROOTS = (
    "/run",
    "/runsync",
    "/status",
    "/stream",
    "/cancel",
    "/retry",
    "/health",
    "/purge-queue",
    "/v2/",
    "/stats",
    "/admin/",
    "/api/v1/",
)


def dialect_for(path: str) -> str:
    """ "v2", "comfyui" or "runpod": whose error shape a refusal on `path` takes."""
    if path.startswith(("/api/v2/", "/api/v1/")) or path == "/api/v2":
        return "runpod" if path.startswith("/api/v1/") else "v2"
    if path.startswith("/api/"):
        return "comfyui"
    if path.startswith(_COMFY_ROOTS):
        return "comfyui"
    if path.startswith(_RUNPOD_ROOTS):
        return "runpod"
    return "v2"


def refusal(path: str, status: int, code: str, message: str, details: dict[str, Any]) -> Any:
    """The JSON body of an error in the dialect of `path`."""
    dialect = dialect_for(path)
    if dialect == "comfyui":
        return {
            "error": {"type": code, "message": message, "details": "", "extra_info": details},
            "node_errors": {},
        }
    if dialect == "runpod":
        return {"error": message, "code": code}
    return envelope(code, message, details)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """What the middleware enforces."""

    max_bytes: int
    max_upload_bytes: int
    idle_timeout_s: float = 15.0
    total_timeout_s: float = 300.0
    #: The request line and headers; the HTTP server bounds what it buffers, this is exact.
    max_header_bytes: int = 64 * 1024
    #: After a counted body passes its limit, up to this much more is read and dropped so that
    #: the client, still sending, gets the 413 instead of a reset connection.
    drain_bytes: int = 4 * 1024 * 1024

    def limit_for(self, path: str) -> int:
        return self.max_upload_bytes if path.startswith(UPLOAD_PREFIXES) else self.max_bytes


class _Refused(HTTPException):
    """Raised from `receive` to stop the app reading; the middleware answers instead."""


class BodyLimit:
    """The ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if _header_bytes(scope) > self.limits.max_header_bytes:
            body = refusal(
                path,
                431,
                "headers_too_large",
                f"the request headers are over {self.limits.max_header_bytes} bytes",
                {"max_header_bytes": self.limits.max_header_bytes},
            )
            await _send_closing(send, 431, body)
            return
        limit = self.limits.limit_for(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._send_too_large(path, limit, send)
            return
        await _Guarded(self, scope, receive, send, path, limit).run()

    async def _send_too_large(self, path: str, limit: int, send: Send) -> None:
        body = refusal(
            path,
            413,
            "request_too_large",
            f"the request body is over {limit} bytes",
            {"max_bytes": limit},
        )
        await _send_closing(send, 413, body)

    async def _send_timeout(self, path: str, send: Send) -> None:
        body = refusal(
            path,
            408,
            "request_timeout",
            "the request body did not arrive in time",
            {
                "idle_timeout_s": self.limits.idle_timeout_s,
                "total_timeout_s": self.limits.total_timeout_s,
            },
        )
        await _send_closing(send, 408, body)


class _Guarded:
    """One request: counts and times its body; takes over the response when it is refused."""

    def __init__(
        self, owner: BodyLimit, scope: Scope, receive: Receive, send: Send, path: str, limit: int
    ) -> None:
        self.owner = owner
        self.scope = scope
        self.receive = receive
        self.send = send
        self.path = path
        self.limit = limit
        self.seen = 0
        self.body_done = scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") and (
            _content_length(scope) in (None, 0) and not _chunked(scope)
        )
        self.deadline = time.monotonic() + owner.limits.total_timeout_s
        self.refused: int | None = None
        self.started = False

    async def run(self) -> None:
        try:
            await self.owner.app(self.scope, self._receive, self._send)
        except _Refused:
            pass
        except Exception:
            if self.refused is None:
                raise
        if self.refused is not None and not self.started:
            if self.refused == 413:
                await self._drain()
                await self.owner._send_too_large(self.path, self.limit, self.send)
            else:
                await self.owner._send_timeout(self.path, self.send)

    async def _drain(self) -> None:
        """Read and drop what the client still sends, within bounds (bytes, idle time)."""
        dropped = 0
        with contextlib.suppress(TimeoutError):
            while not self.body_done and dropped < self.owner.limits.drain_bytes:
                async with asyncio.timeout(self.owner.limits.idle_timeout_s):
                    message = await self.receive()
                dropped += len(message.get("body", b""))
                self.body_done = message["type"] != "http.request" or not message.get(
                    "more_body", False
                )

    async def _receive(self) -> Message:
        if self.refused is not None:
            raise _Refused(self.refused)
        if self.body_done:
            return await self.receive()  # after the body: only http.disconnect, no timeout
        limits = self.owner.limits
        wait = min(limits.idle_timeout_s, self.deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                message = await self.receive()
        except TimeoutError:
            self.refused = 408
            raise _Refused(408) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.refused = 413
                raise _Refused(413)
            self.body_done = not message.get("more_body", False)
        else:
            self.body_done = True
        return message

    async def _send(self, message: Message) -> None:
        if self.refused is not None:
            return  # the app's answer to a body it never fully got: ours replaces it
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


async def _send_closing(send: Send, status: int, body: Any) -> None:
    response = JSONResponse(body, status_code=status, headers={"Connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _header_bytes(scope: Scope) -> int:
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))


def _chunked(scope: Scope) -> bool:
    return any(
        name == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in scope.get("headers", [])
    )


__all__ = ["UPLOAD_PREFIXES", "BodyLimit", "BodyLimits", "dialect_for", "refusal"]
