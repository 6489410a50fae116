"""ComfyUI's GET /view over comfyrun's stored files: an output (type=output, in the
"<job_id>/<node_id>" subfolders its messages name) or a file uploaded to a type's folder
(compat.comfy_uploads: an input, or an upload of type output or temp).

As ComfyUI's (aiohttp's FileResponse): one Range, HEAD, If-None-Match; HTML, XHTML, JavaScript
and CSS sent as application/octet-stream (to be downloaded, not shown); and its conversions of
an image (`preview=webp;90`, `channel=rgb`, `channel=a`: the mask editor's), made off the event
loop from a file read whole, up to `CONVERTED_MAX` bytes."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import posixpath

from fastapi import Request
from fastapi.responses import Response
from PIL import Image

from comfyrun import errors
from comfyrun.api.compat.comfy_paths import FOLDER_TYPES, annotated, refused_name, subfolder_parts
from comfyrun.api.compat.comfy_uploads import uploaded_file
from comfyrun.api.routes.comfy_common import Ctx, comfy_error
from comfyrun.api.routes.files import (
    content_disposition,
    content_safety,
    readable_key,
    serve_key,
)
from comfyrun.comfy.view_image import convert, wants_conversion

#: What ComfyUI's /view sends as application/octet-stream, for a browser to download, not show.
DOWNLOADED_TYPES = frozenset(
    {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
)
#: The largest file converted (`preview`, `channel`); a larger one is a 400.
CONVERTED_MAX = 64 << 20


async def view(
    request: Request,
    ctx: Ctx,
    filename: str | None = None,
    subfolder: str | None = None,
    type: str | None = None,
    preview: str | None = None,
    channel: str | None = None,
) -> Response:
    """A stored file, as ComfyUI's /view serves one: its checks in its order (a name that is
    empty, absolute or holds "..", or an unknown type: 400; a subfolder that leaves the
    folder: 403), a name's annotation ("x.png [output]") over `type`, and the name's own
    folders dropped (ComfyUI serves its base name in the subfolder)."""
    if filename is None:
        return comfy_error(404, "not_found", "no filename")
    filename, annotated_kind = annotated(filename)
    if refused_name(filename):
        return comfy_error(400, "invalid_filename", f"invalid file name {filename!r}")
    kind = annotated_kind or type or "output"
    if kind not in FOLDER_TYPES:
        return comfy_error(400, "invalid_type", f"unknown type {kind}")
    parts = [] if subfolder is None else subfolder_parts(subfolder)
    if parts is None:
        return comfy_error(403, "forbidden", f"subfolder {subfolder!r} leaves the {kind} folder")
    filename = posixpath.basename(filename)
    name = "/".join([*parts, filename])
    size: int | None = None
    if kind == "output" and await readable_key(ctx, name) and await _stored(ctx, name):
        key = name  # a job's output
    elif (found := await uploaded_file(ctx, name, kind)) is not None:
        key, size = found
    else:
        return comfy_error(404, "not_found", f"no {kind} file {name}")
    headers = {"Content-Disposition": content_disposition(filename)}
    if wants_conversion(preview, channel):
        return await _converted(ctx, key, preview, channel, headers)
    media = mimetypes.guess_type(filename)[0]
    if media in DOWNLOADED_TYPES:
        media = "application/octet-stream"
    try:
        response = await serve_key(ctx, key, media, size, request.headers)
    except errors.NotFound:
        return comfy_error(404, "not_found", f"no {kind} file {name}")
    if response.status_code == 416:  # in ComfyUI's shape, the size told as serve_key tells it
        refused = comfy_error(416, "range_not_satisfiable", "the range is past the file's end")
        refused.headers["Content-Range"] = response.headers["Content-Range"]
        return refused
    response.headers.update(headers)
    return response


async def _stored(ctx: Ctx, key: str) -> bool:
    return ctx.storage is not None and await ctx.storage.stat(key) is not None


async def _converted(
    ctx: Ctx, key: str, preview: str | None, channel: str | None, headers: dict[str, str]
) -> Response:
    storage = ctx.storage
    found = None if storage is None else await storage.read_small(key, CONVERTED_MAX)
    if found is None:
        return comfy_error(404, "not_found", f"no file {key}")
    stored, data = found
    if data is None:
        return comfy_error(
            400, "too_large", f"{stored.size_bytes} bytes: too large to convert (at most "
            f"{CONVERTED_MAX})"
        )  # fmt: skip
    try:
        body, content_type = await asyncio.to_thread(_convert, data, preview, channel)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # no image, or not so
        return comfy_error(400, "invalid_image", f"cannot convert {key}: {exc}")
    return Response(
        body, headers={**headers, **content_safety(content_type)}, media_type=content_type
    )


def _convert(data: bytes, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    return convert(io.BytesIO(data), preview, channel)


__all__ = ["CONVERTED_MAX", "DOWNLOADED_TYPES", "view"]
