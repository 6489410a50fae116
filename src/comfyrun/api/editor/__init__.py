"""ComfyUI's own web editor in front of the whole fleet: the official frontend served at /, and
every route it calls beyond ComfyUI's job API (api.routes.comfy_compat) answered as ComfyUI
answers it, per owner: users, settings and saved workflows (userdata, in the data dir),
extensions, i18n, workflow templates, experiment/models, internal; and, with API keys on, the
key page whose cookie lets the editor in as that key's owner.

    frontend   the build at /, the workflow templates at /templates
    userdata   /users, /settings, /userdata, /v2/userdata
    userfiles  one owner's files on disk
    internal   /extensions, /i18n, /workflow_templates, /experiment/models, /free, /internal/*
    keypage    /editor/key, /editor/logout
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from comfyrun.api.context import require_comfy_auth
from comfyrun.api.editor import keypage
from comfyrun.api.editor.frontend import mount_frontend, web_root
from comfyrun.api.editor.internal import add_editor_routes, add_internal_routes
from comfyrun.api.editor.userdata import add_userdata_routes
from comfyrun.api.routing import include
from comfyrun.config import Settings


def install_editor(app: FastAPI, settings: Settings) -> None:
    """The editor's routes; call it last: the frontend's files claim their paths at /."""
    root = web_root(settings)
    for prefix in ("", "/api"):
        router = APIRouter(
            prefix=prefix,
            tags=["comfyui editor"],
            dependencies=[Depends(require_comfy_auth)],
            include_in_schema=False,
        )
        add_userdata_routes(router)
        add_editor_routes(router, root)
        include(app, router)
    internal = APIRouter(
        tags=["comfyui editor"], dependencies=[Depends(require_comfy_auth)], include_in_schema=False
    )
    add_internal_routes(internal)
    include(app, internal)
    include(app, keypage.router)
    mount_frontend(app, settings)


__all__ = ["install_editor"]
