"""The rest of what ComfyUI's editor asks a server, answered as ComfyUI 0.3.64 answers it:

    /extensions              the build's own extension scripts (no custom-node web folders:
                             comfyrun has no custom nodes of its own)
    /i18n, /workflow_templates   custom nodes' translations and example workflows: none, `{}`
    /experiment/models[/{folder}]  the fleet's model folders and files (its catalog's union)
    /free                    accepted; comfyrun's backends manage their own memory
    /internal/logs[/raw], /internal/logs/subscribe, /internal/folder_paths, /internal/files/{type}
                             comfyrun's log is its own, not a ComfyUI console: empty answers

/internal/* is not mirrored under /api, as in ComfyUI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from comfyrun.api.context import AppContext, get_ctx, reads
from comfyrun.api.editor.frontend import extension_scripts
from comfyrun.core.catalog import NodeCatalog

Ctx = Annotated[AppContext, Depends(get_ctx)]

#: ComfyUI leaves these out of /experiment/models.
HIDDEN_FOLDERS = ("configs", "custom_nodes")


async def _union(ctx: AppContext) -> NodeCatalog | None:
    if ctx.catalog is None:
        return None
    union: NodeCatalog | None = await ctx.catalog.current()
    return union


def add_editor_routes(router: APIRouter, web_root: Path | None) -> None:
    """The /api-mirrored routes."""

    async def extensions() -> Response:
        found = await asyncio.to_thread(extension_scripts, web_root) if web_root else []
        return JSONResponse(found)

    router.add_api_route("/extensions", extensions, methods=["GET"])
    router.add_api_route("/i18n", empty_object, methods=["GET"])
    router.add_api_route("/workflow_templates", empty_object, methods=["GET"])
    router.add_api_route("/experiment/models", experiment_models, methods=["GET"])
    router.add_api_route("/experiment/models/{folder}", experiment_model_files, methods=["GET"])
    router.add_api_route("/free", free, methods=["POST"])


def add_internal_routes(router: APIRouter) -> None:
    """/internal/*: ComfyUI does not mirror these under /api."""
    router.add_api_route("/internal/logs", logs, methods=["GET"])
    router.add_api_route("/internal/logs/raw", raw_logs, methods=["GET"])
    router.add_api_route("/internal/logs/subscribe", subscribe_logs, methods=["PATCH"])
    router.add_api_route("/internal/folder_paths", folder_paths, methods=["GET"])
    router.add_api_route("/internal/files/{directory_type}", files, methods=["GET"])


async def empty_object() -> Response:
    return JSONResponse({})


async def experiment_models(ctx: Ctx) -> Response:
    union = await _union(ctx)
    folders = union.model_folders if union is not None else []
    return JSONResponse(
        [{"name": name, "folders": []} for name in folders if name not in HIDDEN_FOLDERS]
    )


async def experiment_model_files(folder: str, ctx: Ctx) -> Response:
    union = await _union(ctx)
    if union is None or folder not in union.models:
        return Response(status_code=404)
    return JSONResponse([{"name": name, "pathIndex": 0} for name in union.models[folder]])


async def free() -> Response:
    return Response(status_code=200)


async def logs() -> Response:
    return JSONResponse("")


async def raw_logs() -> Response:
    return JSONResponse({"entries": [], "size": {"cols": 80, "rows": 24}})


@reads  # (a PATCH: ComfyUI's editor asks for its console's lines, read only)
async def subscribe_logs() -> Response:
    return Response(status_code=200)


async def folder_paths(ctx: Ctx) -> Response:
    union = await _union(ctx)
    folders = union.model_folders if union is not None else []
    return JSONResponse({name: [] for name in folders})


async def files(directory_type: str) -> Response:
    """ComfyUI lists the top-level files of that folder; comfyrun keeps outputs per job, inputs
    as assets and no temp files, so it has none to list."""
    if directory_type not in ("output", "input", "temp"):
        return JSONResponse({"error": "Invalid directory type"}, status_code=400)
    return JSONResponse([])


__all__ = ["add_editor_routes", "add_internal_routes"]
