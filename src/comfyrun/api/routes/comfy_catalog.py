"""ComfyUI's node-definition routes, served from the fleet's catalog (backends.catalog): the union
of every backend's /object_info, /models, /models/{folder}, /embeddings and /features, in
ComfyUI's shapes, and /view_metadata asked of a backend that has the model. Answered from the store when no backend is up; with nothing known yet, the
request waits while the backends start (bounded by their start timeout)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from comfyrun.api.context import AppContext, get_ctx
from comfyrun.core.catalog import JSON, NodeCatalog
from comfyrun.errors import ComfyrunError

Ctx = Annotated[AppContext, Depends(get_ctx)]

#: How long a backend's answer to /view_metadata is waited for.
METADATA_TIMEOUT_S = 10.0


def own_features(ctx: AppContext) -> dict[str, Any]:
    """What comfyrun itself supports, whatever its backends say: its own upload limit (ComfyUI
    tells its own, --max-upload-size), not ComfyUI's default of 100 MiB."""
    return {"supports_preview_metadata": True, "max_upload_size": ctx.settings.max_upload_bytes}


def add_catalog_routes(router: APIRouter) -> None:
    router.add_api_route("/object_info", object_info, methods=["GET"])
    router.add_api_route("/object_info/{node_class}", object_info_one, methods=["GET"])
    router.add_api_route("/models", model_folders, methods=["GET"])
    router.add_api_route("/models/{folder}", model_files, methods=["GET"])
    router.add_api_route("/embeddings", embeddings, methods=["GET"])
    router.add_api_route("/features", features, methods=["GET"])
    router.add_api_route("/view_metadata/{folder}", view_metadata, methods=["GET"])


async def _union(ctx: AppContext) -> NodeCatalog | None:
    if ctx.catalog is None:
        return None
    union: NodeCatalog | None = await ctx.catalog.current()
    return union


def _unavailable() -> JSONResponse:
    body = {
        "error": {
            "type": "unavailable",
            "message": "no backend could describe its nodes (none is configured or starts)",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {},
    }
    return JSONResponse(body, status_code=503)


async def object_info(ctx: Ctx) -> Response:
    union = await _union(ctx)
    if union is None:
        return _unavailable()
    return Response(_encoded(ctx, union), media_type="application/json")


def _encoded(ctx: AppContext, union: NodeCatalog) -> bytes:
    """The whole /object_info body, encoded once per union (several MB with custom nodes)."""
    cached = ctx.extras.get("object_info_body")
    if cached is not None and cached[0] is union:
        body: bytes = cached[1]
        return body
    body = json.dumps(union.object_info, ensure_ascii=False, separators=(",", ":")).encode()
    ctx.extras["object_info_body"] = (union, body)
    return body


async def object_info_one(node_class: str, ctx: Ctx) -> Response:
    union = await _union(ctx)
    if union is None:
        return _unavailable()
    info = union.object_info
    return JSONResponse({node_class: info[node_class]} if node_class in info else {})


async def model_folders(ctx: Ctx) -> Response:
    union = await _union(ctx)
    return JSONResponse(union.model_folders if union is not None else [])


async def model_files(folder: str, ctx: Ctx) -> Response:
    union = await _union(ctx)
    if union is None or folder not in union.models:
        return Response(status_code=404)  # ComfyUI answers an unknown folder with an empty 404
    return JSONResponse(union.models[folder])


async def embeddings(ctx: Ctx) -> Response:
    union = await _union(ctx)
    return JSONResponse(union.embeddings if union is not None else [])


async def view_metadata(folder: str, ctx: Ctx, filename: str | None = None) -> Response:
    """A model's safetensors metadata, as ComfyUI answers it: asked of the ready backends
    whose model lists hold that file (at once, the first in fleet order that answers it wins)
    and relayed; an empty 404, ComfyUI's "no metadata", for a name that is not .safetensors,
    a file no ready backend lists, or one none answers in time."""
    if filename is None or not filename.endswith(".safetensors"):
        return Response(status_code=404)
    folder = _LEGACY_FOLDERS.get(folder, folder)
    holders = [
        b.client
        for b in (ctx.pool.backends if ctx.pool is not None else [])
        if b.client is not None and b.url and b.state.value in ("ready", "busy")
        and _lists(ctx, b.name, folder, filename)
    ]  # fmt: skip
    answers = await asyncio.gather(*(_metadata_of(c, folder, filename) for c in holders))
    found = next((a for a in answers if a is not None), None)
    return Response(status_code=404) if found is None else JSONResponse(found)


#: folder_paths.map_legacy: the old names of two model folders (/view_metadata maps no other).
_LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}


def _lists(ctx: AppContext, backend: str, folder: str, filename: str) -> bool:
    entry = ctx.catalog.get(backend) if ctx.catalog is not None else None
    return entry is not None and filename in entry.models.get(folder, ())


async def _metadata_of(client: Any, folder: str, filename: str) -> JSON | None:
    """One backend's answer, or None (none, an error, or no answer in time)."""
    try:
        async with asyncio.timeout(METADATA_TIMEOUT_S):
            found: JSON | None = await client.view_metadata(folder, filename)
    except (ComfyrunError, OSError, TimeoutError, ValueError):
        return None
    return found


async def features(ctx: Ctx) -> Response:
    union = ctx.catalog.union() if ctx.catalog is not None else None  # never worth a wait
    merged = dict(union.features) if union is not None else {}
    return JSONResponse(merged | own_features(ctx))


__all__ = ["add_catalog_routes", "own_features"]
