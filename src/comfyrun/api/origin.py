"""ComfyUI's origin check: a browser page of another site cannot drive a server on loopback.

Browsers let any page send a POST (a form, a `text/plain` fetch) to http://127.0.0.1:8188 and
open a websocket to it; neither is stopped by CORS, which only hides the answer. ComfyUI's
server refuses such requests (server.py, `create_origin_only_middleware`): when a request
names a loopback host (`Host`) and carries an `Origin` whose host differs, it answers 403 with
no body, on every route and on /ws. comfyrun does the same, on every route of every dialect
(an unauthenticated comfyrun on a desktop was as open to any page its user visited as a
ComfyUI without the check): the host and the origin are compared as ComfyUI compares them
(the port too, unless one of them names none), and "loopback" is an address of 127.0.0.0/8 or
::1, `localhost` or a name under `.localhost` (ComfyUI also asks the resolver about other
names; that lookup would block the event loop on every request). Scripts send no `Origin`;
the editor comfyrun serves sends its own; a page of another origin that must reach a local
comfyrun is named in `allowed_origins` (as ComfyUI's `--enable-cors-header` lifts its check).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from comfyrun.core.origin import cross_origin

log = logging.getLogger(__name__)


class OriginGuard:
    """The check as ASGI middleware: a refused HTTP request is answered 403 with no body, a
    refused websocket closed before it is accepted (the server answers 403)."""

    def __init__(self, app: ASGIApp, *, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.open = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self.open or kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if host is None or origin is None or not self._refused(host, origin):
            await self.app(scope, receive, send)
            return
        log.warning(
            "request with non matching host and origin %s != %s, returning 403",
            host.decode("latin-1"),
            origin.decode("latin-1"),
            extra={"action": "origin_refused"},
        )
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _refused(self, host: bytes, origin: bytes) -> bool:
        text = origin.decode("latin-1")
        if text.rstrip("/").lower() in self.allowed:
            return False
        return cross_origin(host.decode("latin-1"), text)


__all__ = ["OriginGuard"]
