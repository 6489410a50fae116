"""POST /upload/image, /upload/mask and GET /view, with ComfyUI's status codes and names."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import mimetypes
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from comfyrun.comfy.view_image import convert, wants_conversion


class Dirs:
    def __init__(self, input_dir: Path, output_dir: Path, temp_dir: Path) -> None:
        self.input = os.path.abspath(input_dir)
        self.output = os.path.abspath(output_dir)
        self.temp = os.path.abspath(temp_dir)

    def by_type(self, kind: str) -> str | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def annotated(self, name: str) -> tuple[str, str | None]:
        for tag, base in (
            ("[output]", self.output),
            ("[input]", self.input),
            ("[temp]", self.temp),
        ):
            if name.endswith(tag):
                return name[: -(len(tag) + 1)], base
        return name, None


def _same_content(path: str, data: bytes) -> bool:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(data).hexdigest()


async def _read_form(
    request: web.Request,
) -> tuple[dict[str, str], tuple[str, bytes] | None, dict[str, bytes]]:
    """(text fields, the `image` part as (filename, bytes), other file parts)."""
    fields: dict[str, str] = {}
    image: tuple[str, bytes] | None = None
    files: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        return fields, None, files
    async for part in reader:
        name = getattr(part, "name", None)
        filename = getattr(part, "filename", None)
        data = await part.read()  # type: ignore[union-attr]
        if name == "image" and filename is not None:
            image = (filename, bytes(data))
        elif filename is not None and name is not None:
            files[name] = bytes(data)
        elif name is not None:
            fields[name] = bytes(data).decode("utf-8", "replace")
    return fields, image, files


def _store(
    dirs: Dirs, fields: dict[str, str], image: tuple[str, bytes]
) -> tuple[web.StreamResponse | None, str, str, str, str]:
    """Resolve where an upload goes: (error response or None, path, name, subfolder, type)."""
    kind = fields.get("type") or "input"
    upload_dir = dirs.by_type(kind)
    if upload_dir is None:
        return web.Response(status=400), "", "", "", kind
    filename, data = image
    if not filename:
        return web.Response(status=400), "", "", "", kind
    subfolder = fields.get("subfolder", "")
    folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return web.Response(status=400), "", "", "", kind
    os.makedirs(folder, exist_ok=True)
    overwrite = fields.get("overwrite")
    if overwrite not in ("true", "1"):
        stem, ext = os.path.splitext(filename)
        i = 1
        while os.path.exists(filepath):
            if _same_content(filepath, data):
                return None, "", filename, subfolder, kind
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(folder, filename)
            i += 1
    return None, filepath, filename, subfolder, kind


def _save_upload(
    dirs: Dirs, fields: dict[str, str], image: tuple[str, bytes]
) -> web.StreamResponse:
    error, path, name, subfolder, kind = _store(dirs, fields, image)
    if error is not None:
        return error
    if path:
        with open(path, "wb") as f:
            f.write(image[1])
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


async def upload_image(request: web.Request, dirs: Dirs) -> web.StreamResponse:
    fields, image, _ = await _read_form(request)
    if image is None:
        return web.Response(status=400)
    return await asyncio.to_thread(_save_upload, dirs, fields, image)


def _save_mask(dirs: Dirs, fields: dict[str, str], image: tuple[str, bytes]) -> web.StreamResponse:
    try:
        ref: dict[str, Any] = json.loads(fields["original_ref"])
        name, base = dirs.annotated(str(ref["filename"]))
    except (ValueError, KeyError, TypeError):
        return web.Response(status=400)
    if not name or name[0] == "/" or ".." in name:
        return web.Response(status=400)
    base = base or dirs.by_type(str(ref.get("type", "output")))
    if base is None:
        return web.Response(status=400)
    folder = os.path.abspath(os.path.join(base, str(ref.get("subfolder", ""))))
    if os.path.commonpath((folder, base)) != base:
        return web.Response(status=403)
    original = os.path.join(folder, name)
    if not os.path.isfile(original):
        return web.Response(status=404)
    error, path, out_name, subfolder, kind = _store(dirs, fields, image)
    if error is not None:
        return error
    if path:
        try:
            with Image.open(original) as orig, Image.open(io.BytesIO(image[1])) as mask:
                result = orig.convert("RGBA")
                alpha = mask.convert("RGBA").getchannel("A").resize(result.size)
                result.putalpha(alpha)
                result.save(path, compress_level=4)
        except OSError:
            return web.Response(status=400)
    return web.json_response({"name": out_name, "subfolder": subfolder, "type": kind})


async def upload_mask(request: web.Request, dirs: Dirs) -> web.StreamResponse:
    fields, image, _ = await _read_form(request)
    if image is None or "original_ref" not in fields:
        return web.Response(status=400)
    return await asyncio.to_thread(_save_mask, dirs, fields, image)


def _disposition(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'filename="{filename}"'}


def view(request: web.Request, dirs: Dirs) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    filename, output_dir = dirs.annotated(query["filename"])
    if not filename:
        return web.Response(status=400)
    if filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    if output_dir is None:
        output_dir = dirs.by_type(query.get("type", "output"))
    if output_dir is None:
        return web.Response(status=400)
    if "subfolder" in query:
        full = os.path.join(output_dir, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
            return web.Response(status=403)
        output_dir = full
    filename = os.path.basename(filename)
    file = os.path.join(output_dir, filename)
    if not os.path.isfile(file):
        return web.Response(status=404)
    channel = query.get("channel")
    try:
        if wants_conversion(query.get("preview"), channel):
            body, content_type = convert(file, query.get("preview"), channel)
            return web.Response(
                body=body, content_type=content_type, headers=_disposition(filename)
            )
    except OSError:
        return web.Response(status=400)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type in {
        "text/html",
        "text/html-sandboxed",
        "application/xhtml+xml",
        "text/javascript",
        "text/css",
    }:
        content_type = "application/octet-stream"
    return web.FileResponse(file, headers={**_disposition(filename), "Content-Type": content_type})
