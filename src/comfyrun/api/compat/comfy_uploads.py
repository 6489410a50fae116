"""Files uploaded through ComfyUI's POST /upload/image, kept as comfyrun assets.

Each upload is stored once as an asset (deduplicated by content) and named by a small record
in the output storage at "comfy-inputs/<subfolder>/<name>" holding its asset id. A prompt that
names such a file (in any input, "sub/name.png" or "name.png [input]") gets an input spec for
that asset, so the dispatcher places the file on whichever backend runs the prompt.

As ComfyUI keeps an upload of `type` "output" or "temp" in that folder, not with the inputs,
such an upload is named under a ".output" or ".temp" segment of the space
("comfy-inputs/.output/<subfolder>/<name>"), which no input's name can hold (no segment of a
name starts with "."): /view finds it by that type, and a prompt names it annotated
("name.png [output]"), which is pointed at the file placed with the job's inputs.

An API key's uploads are named in a space of its own, "comfy-inputs-of/<owner>/<subfolder>/
<name>" (an admin's, or all of them without keys, in "comfy-inputs/"): in one space for all,
another key's upload of the same name took the name over (with `overwrite`: the first key's
file was gone, its prompts refused) or was renamed for it (telling that it was there).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from comfyrun import errors
from comfyrun.api.compat.comfy_paths import FOLDER_TYPES, annotated, subfolder_parts
from comfyrun.api.context import AppContext
from comfyrun.core.job import JSON

UPLOADS_PREFIX = "comfy-inputs"
#: Where the uploads of an API key (not an admin's) are named: OWNED_PREFIX/<owner>/…
OWNED_PREFIX = "comfy-inputs-of"
_MAX_RENAMES = 1000


def upload_key(name: str, owner: str | None = None, kind: str = "input") -> str | None:
    """The record's storage key for an upload name ("sub/dir/file.png") of `owner` (None: an
    admin, or no API keys) in ComfyUI's folder `kind`, or None if unsafe."""
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return None
    space = [UPLOADS_PREFIX] if owner is None else [OWNED_PREFIX, owner]
    if kind != "input":
        space.append(f".{kind}")
    return "/".join([*space, *parts])


async def read_upload(ctx: AppContext, name: str, kind: str = "input") -> JSON | None:
    """The record of a file the caller uploaded to ComfyUI's folder `kind` ({"asset_id",
    "content_type"}), or None. A key's input from before uploads were named per key is found
    where it was, if its asset is the key's."""
    owner = ctx.principal.owner
    record = await _read_record(ctx, upload_key(name, owner, kind))
    if record is not None or owner is None or kind != "input":
        return record
    record = await _read_record(ctx, upload_key(name))
    if record is None or ctx.assets is None:
        return None
    try:
        await ctx.assets.get(record["asset_id"])  # the caller's own assets only
    except errors.NotFound:
        return None
    return record


async def _read_record(ctx: AppContext, key: str | None) -> JSON | None:
    storage = ctx.storage
    if key is None or storage is None:
        return None
    try:
        if await storage.stat(key) is None:
            return None
        raw = b"".join([chunk async for chunk in storage.open(key)])
        record = json.loads(raw)
    except (errors.ComfyrunError, ValueError):
        return None
    if isinstance(record, dict) and isinstance(record.get("asset_id"), str):
        return record
    return None


async def store_upload(
    ctx: AppContext,
    chunks: AsyncIterable[bytes],
    *,
    filename: str,
    subfolder: str,
    content_type: str,
    overwrite: bool,
    kind: str = "input",
) -> tuple[str, str]:
    """Store an upload in ComfyUI's folder `kind`; returns (name, subfolder) as ComfyUI
    answers them (the subfolder as sent). Like ComfyUI, the same name with other bytes gets
    "name (1).ext" unless `overwrite`; the same bytes reuse the name. Raises InvalidRequest
    for a bad name or a subfolder that leaves the folder (ComfyUI's 400), StorageError and
    the assets' errors."""
    if ctx.assets is None or ctx.storage is None:
        raise errors.StorageError("this server keeps no uploads")
    if kind not in FOLDER_TYPES:
        raise errors.InvalidRequest(f"unknown upload type {kind!r}")
    filename = filename.strip()
    parts = subfolder_parts(subfolder)
    if parts is None:
        raise errors.InvalidRequest(f"subfolder {subfolder!r} leaves the {kind} folder")
    if not filename or "/" in filename or upload_key("/".join([*parts, filename])) is None:
        raise errors.InvalidRequest(f"invalid file name {filename}")
    name = "/".join([*parts, filename])
    asset, _ = await ctx.assets.upload(chunks, content_type=content_type, file_path=name)
    if not overwrite:
        filename, same = await _free_name(ctx, parts, filename, asset.hash, kind)
        if same:  # as ComfyUI: the file of these bytes is kept as it is
            await ctx.assets.delete(asset.id)  # (the bytes stay: they are that file's too)
            return filename, subfolder
    key = upload_key("/".join([*parts, filename]), ctx.principal.owner, kind)
    assert key is not None
    record = json.dumps({"asset_id": asset.id, "content_type": content_type}).encode()
    await _put(ctx, key, record)
    return filename, subfolder


async def _free_name(
    ctx: AppContext, parts: list[str], filename: str, digest: str, kind: str
) -> tuple[str, bool]:
    """(`filename`, or the first "stem (i).ext" that is free or already holds the bytes of
    hash `digest`; whether it holds them). Each upload is an asset of its own (its bytes
    stored once): the same bytes are found by their hash, not by the asset."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    candidate = filename
    for i in range(1, _MAX_RENAMES):
        record = await read_upload(ctx, "/".join([*parts, candidate]), kind)
        if record is None:
            return candidate, False
        if await _hash_of(ctx, record) == digest:
            return candidate, True
        candidate = f"{stem} ({i}){dot}{ext}"
    raise errors.Conflict(f"too many uploads named {filename}")


async def _hash_of(ctx: AppContext, record: JSON) -> str | None:
    """The content hash of an upload's asset (None: its asset is gone)."""
    try:
        asset = await ctx.assets.get(record["asset_id"])
    except errors.NotFound:
        return None
    digest: str = asset.hash
    return digest


async def _put(ctx: AppContext, key: str, data: bytes) -> None:
    storage: Any = ctx.storage

    async def one() -> AsyncIterator[bytes]:
        yield data

    await storage.put(key, one(), content_type="application/json")


async def uploaded_file(ctx: AppContext, name: str, kind: str = "input") -> tuple[str, int] | None:
    """(storage key, size) of the bytes of the caller's upload `name` to folder `kind`, or
    None (none, or its asset is gone)."""
    record = await read_upload(ctx, name, kind)
    if record is None or ctx.assets is None:
        return None
    try:
        asset = await ctx.assets.get(record["asset_id"])
    except errors.NotFound:
        return None
    return asset.storage_key, asset.size_bytes


async def uploads_in(ctx: AppContext, prompt: JSON) -> list[JSON]:
    """Input specs for the uploaded files the prompt names: {"name", "asset_id"} for an
    input ("sub/x.png", "sub/x.png [input]"), placed under its name; {"node", "input",
    "asset_id"} for each input that names an output or temp upload ("x.png [output]"),
    which ComfyUI reads from a folder a job's files are not placed in."""
    if ctx.storage is None:
        return []
    specs: list[JSON] = []
    seen: set[str] = set()
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if not isinstance(value, str) or "." not in value or len(value) > 512:
                continue
            name, kind = annotated(value)
            if kind not in (None, "input"):
                record = await read_upload(ctx, name, kind)
                if record is not None:
                    specs.append({"node": node_id, "input": key, "asset_id": record["asset_id"]})
                continue
            if name in seen:
                continue
            record = await read_upload(ctx, name)
            if record is not None:
                seen.add(name)
                specs.append({"name": name, "asset_id": record["asset_id"]})
    return specs


__all__ = [
    "OWNED_PREFIX",
    "UPLOADS_PREFIX",
    "read_upload",
    "store_upload",
    "upload_key",
    "uploaded_file",
    "uploads_in",
]
