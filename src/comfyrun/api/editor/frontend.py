"""ComfyUI's web editor itself: the built frontend (the pinned `comfyui-frontend-package`, or the
folder `frontend_root` names) served at /, and the workflow templates of the
`comfyui-workflow-templates` package at /templates, as ComfyUI's server.py serves them.

Only the paths the build holds are claimed (one mount per top-level folder, one route per
top-level file), so every other path keeps its own 404 or 405. The files are public: they hold
no data; with API keys on, / itself sends a browser without the key cookie to the key page.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from comfyrun.api.context import authenticate
from comfyrun.config import Settings

log = logging.getLogger(__name__)

#: As ComfyUI's cache middleware: entry points are revalidated on every load.
NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}


def package_dir(package: str, folder: str) -> Path | None:
    """`folder` inside an installed package, or None when it is not installed."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root / folder))
    return path if path.is_dir() else None


def web_root(settings: Settings) -> Path | None:
    """The editor's build: `frontend_root`, else the comfyui-frontend-package's."""
    if settings.frontend_root is not None:
        return settings.frontend_root.expanduser().resolve()
    return package_dir("comfyui_frontend_package", "static")


def templates_root() -> Path | None:
    return package_dir("comfyui_workflow_templates", "templates")


def package_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


class EditorFiles(StaticFiles):
    """StaticFiles with ComfyUI's cache headers: scripts, styles and index files revalidate."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        name = path.rsplit("/", 1)[-1]
        if name.endswith((".js", ".css")) or (name.startswith("index") and name.endswith(".json")):
            response.headers.setdefault("Cache-Control", "no-cache")
        return response


def extension_scripts(root: Path) -> list[str]:
    """GET /extensions: the build's own extension scripts, as "/extensions/…/x.js" paths."""
    folder = root / "extensions"
    if not folder.is_dir():
        return []
    return sorted("/" + p.relative_to(root).as_posix() for p in folder.rglob("*.js") if p.is_file())


def mount_frontend(app: FastAPI, settings: Settings) -> Path | None:
    """Serve the editor at / (after every other route); None when there is no build."""
    root = web_root(settings)
    templates = templates_root()
    if templates is not None:
        app.mount("/templates", EditorFiles(directory=templates), name="editor-templates")
    if root is None or not (root / "index.html").is_file():
        log.warning(
            "no ComfyUI frontend at %s: the editor is not served at /",
            root or "comfyui-frontend-package",
            extra={"action": "no_frontend"},
        )
        return None
    app.add_api_route("/", _index_route(root), methods=["GET", "HEAD"], include_in_schema=False)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "index.html":
            continue
        if entry.is_dir():
            app.mount(
                f"/{entry.name}", EditorFiles(directory=entry.path), name=f"editor-{entry.name}"
            )
        elif entry.is_file():
            app.add_api_route(
                f"/{entry.name}",
                _file_route(Path(entry.path)),
                methods=["GET", "HEAD"],
                include_in_schema=False,
            )
    return root


def _index_route(root: Path) -> Any:
    index = root / "index.html"

    async def editor_index(request: Request) -> Response:
        if await authenticate(request, cookie=True) is None:
            # API keys are on and this browser has none yet: the key page first
            prefix = request.scope.get("root_path", "")
            return RedirectResponse(f"{prefix}/editor/key", status_code=303)
        return FileResponse(index, media_type="text/html", headers=NO_CACHE)

    return editor_index


def _file_route(path: Path) -> Any:
    async def editor_file() -> Response:
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    return editor_file


__all__ = [
    "EditorFiles",
    "extension_scripts",
    "mount_frontend",
    "package_version",
    "templates_root",
    "web_root",
]
