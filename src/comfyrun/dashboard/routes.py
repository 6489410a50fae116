"""GET /dashboard: the live operations dashboard, plain static files with no build step.

The page is public (it holds no data); everything it shows comes from the native JSON API,
which keeps its own bearer-token check. The page carries a `<base href>` so that its assets and
its API calls resolve under the app's root path (a reverse proxy mounting comfyrun under a
prefix) whether it was asked for as /dashboard or /dashboard/.
"""

from __future__ import annotations

import html
import mimetypes
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from comfyrun.errors import NotFound

#: Browsers revalidate on every load: a new comfyrun version must not meet a cached old app.js.
CACHE = {"Cache-Control": "no-cache"}
#: Content types by suffix, so they do not depend on the host's mime.types.
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
BASE_MARKER = "{{base}}"

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def static_dir() -> Traversable:
    """The dashboard's files, wherever comfyrun is installed (a checkout or a wheel)."""
    return resources.files("comfyrun.dashboard") / "static"


def _asset(name: str) -> Traversable | None:
    # only plain file names straight inside static/: no traversal, no hidden files
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = static_dir() / name
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. a name too long for the file system: no such file either
        return None


def _content_type(name: str) -> str:
    for suffix, ctype in TYPES.items():
        if name.endswith(suffix):
            return ctype
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


@router.api_route("/dashboard", methods=["GET", "HEAD"], response_class=HTMLResponse)
@router.api_route("/dashboard/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def dashboard_page(request: Request) -> HTMLResponse:
    page = (static_dir() / "index.html").read_text(encoding="utf-8")
    base = html.escape(f"{request.scope.get('root_path', '')}/dashboard/", quote=True)
    return HTMLResponse(page.replace(BASE_MARKER, base), headers=CACHE)


@router.api_route("/dashboard/{name}", methods=["GET", "HEAD"])
async def dashboard_asset(name: str) -> Response:
    path = _asset(name)
    if path is None or name == "index.html":
        raise NotFound(f"no dashboard file {name!r}", details={"name": name})
    return Response(path.read_bytes(), media_type=_content_type(name), headers=CACHE)


__all__ = ["router", "static_dir"]
