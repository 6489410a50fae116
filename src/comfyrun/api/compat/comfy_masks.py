"""ComfyUI's POST /upload/mask, as server.py answers it: the mask editor sends only the mask (an
image whose alpha is the mask) and names the image it was drawn on in `original_ref`
({"filename", "subfolder", "type"}); the server stores that image with the mask as its alpha
(its PNG text, the workflow, kept), under the upload's name, as /upload/image stores a file.

The original is a job's output ("output", ComfyUI's default) or an upload to any type's
folder (compat.comfy_uploads). What ComfyUI fails on with a 500 (no or bad `original_ref`, a
mask that is no image) or answers 200 while saving nothing (an original that is not there)
is a 4xx here, as the emulator answers it.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image, PngImagePlugin

from comfyrun import errors
from comfyrun.api.compat.comfy_paths import FOLDER_TYPES, annotated, refused_name, subfolder_parts
from comfyrun.api.compat.comfy_uploads import store_upload, uploaded_file
from comfyrun.api.context import AppContext
from comfyrun.api.routes.files import readable_key

#: The largest original image or mask read (both are held in memory to be composited).
MASK_MAX = 64 << 20


def original_name(ref_text: str | None) -> tuple[str, str]:
    """(the original's name under its type's folder, its type) from `original_ref`; raises
    InvalidRequest for a missing or bad ref, Forbidden for a subfolder that leaves it."""
    try:
        ref = json.loads(ref_text) if ref_text is not None else None
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise errors.InvalidRequest('original_ref must be JSON: {"filename", "subfolder", "type"}')
    filename, annotated_kind = annotated(ref["filename"])
    kind: Any = annotated_kind or ref.get("type") or "output"
    if refused_name(filename) or "\\" in filename:
        raise errors.InvalidRequest("invalid original_ref filename")
    if kind not in FOLDER_TYPES:
        raise errors.InvalidRequest(f"unknown original_ref type {kind!r}")
    subfolder = ref.get("subfolder") or ""
    if not isinstance(subfolder, str):
        raise errors.InvalidRequest("original_ref subfolder must be a string")
    parts = subfolder_parts(subfolder)
    if parts is None:
        raise errors.Forbidden("original_ref leaves its folder")
    return "/".join([*parts, *(p for p in filename.split("/") if p)]), kind


async def original_bytes(ctx: AppContext, name: str, kind: str) -> bytes:
    """The bytes of the caller's input upload or job output `name`; NotFound if there is
    none (another key's is none), InvalidRequest past MASK_MAX."""
    key: str | None = None
    if kind == "output" and await readable_key(ctx, name):
        key = name  # a job's output, if there is one
        if ctx.storage is not None and await ctx.storage.stat(key) is None:
            key = None
    if key is None:
        upload = await uploaded_file(ctx, name, kind)
        key = None if upload is None else upload[0]
    found = (
        None if key is None or ctx.storage is None else await ctx.storage.read_small(key, MASK_MAX)
    )
    if found is None:
        raise errors.NotFound(f"no {kind} file {name}", details={"original_ref": name})
    stored, data = found
    if data is None:
        raise errors.InvalidRequest(f"{name}: {stored.size_bytes} bytes, too large to mask")
    return bytes(data)


def composite(original: bytes, mask: bytes) -> bytes:
    """`original` as RGBA PNG with `mask`'s alpha (resized to it), its PNG text kept; raises
    InvalidRequest when either is no image."""
    try:
        with Image.open(io.BytesIO(original)) as image:
            text = dict(getattr(image, "text", {}) or {})
            result = image.convert("RGBA")
        with Image.open(io.BytesIO(mask)) as drawn:
            alpha = drawn.convert("RGBA").getchannel("A")
        if alpha.size != result.size:
            alpha = alpha.resize(result.size)
        result.putalpha(alpha)
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(str(key), str(value))
        out = io.BytesIO()
        result.save(out, format="PNG", compress_level=4, pnginfo=info)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise errors.InvalidRequest(f"cannot put the mask on the image: {exc}") from None
    return out.getvalue()


async def store_mask(
    ctx: AppContext,
    mask: bytes,
    *,
    filename: str,
    subfolder: str,
    original_ref: str | None,
    overwrite: bool,
    upload_type: str = "input",
) -> tuple[str, str]:
    """The original with `mask` as its alpha, stored as an upload; (name, subfolder)."""
    if upload_type not in FOLDER_TYPES or subfolder_parts(subfolder) is None:  # as ComfyUI,
        raise errors.InvalidRequest(f"invalid type {upload_type!r} or subfolder {subfolder!r}")
    name, kind = original_name(original_ref)  # (where the mask goes checked first)
    original = await original_bytes(ctx, name, kind)
    masked = await asyncio.to_thread(composite, original, mask)

    async def chunks() -> AsyncIterator[bytes]:
        yield masked

    return await store_upload(
        ctx,
        chunks(),
        filename=filename,
        subfolder=subfolder,
        content_type="image/png",
        overwrite=overwrite,
        kind=upload_type,
    )


__all__ = ["MASK_MAX", "composite", "original_name", "store_mask"]
