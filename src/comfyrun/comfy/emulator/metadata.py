"""GET /view_metadata/{folder_name}?filename=, as ComfyUI's server.py answers it: the
`__metadata__` object of a .safetensors model's header, as JSON; an empty 404 for anything else
(no filename, not .safetensors, no such file, a header past 1 MiB or without `__metadata__`).

A model file the emulator only lists (its `models` setting, the defaults) has no bytes, so no
header: a 404, as ComfyUI answers a file whose header holds no metadata. A file in its models
folder (`models_dir`, the extra model paths) is read as ComfyUI reads it."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from comfyrun.comfy.emulator.config import EmulatorConfig
from comfyrun.comfy.emulator.modelpaths import LEGACY_NAMES

#: comfy.utils.safetensors_header's max_size, as /view_metadata passes it.
MAX_HEADER = 1024 * 1024


def safetensors_header(path: Path, max_size: int = MAX_HEADER) -> bytes | None:
    """The JSON header of a safetensors file, None past `max_size` (comfy.utils)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > max_size:
            return None
        return f.read(length)


def _metadata(config: EmulatorConfig, folders: list[str], folder: str, filename: str) -> Any:
    """The file's `__metadata__`, None where there is no such folder, file or metadata."""
    if folder not in folders and folder not in config.model_lists():
        return None
    # folder_paths.get_full_path: the name taken relative to the folder, whatever it climbs
    path = config.model_path(folder, os.path.relpath(os.path.join("/", filename), "/"))
    header = None if path is None else safetensors_header(path)
    if header is None:
        return None
    parsed = json.loads(header)
    return parsed.get("__metadata__") if isinstance(parsed, dict) else None


async def view_metadata(
    request: web.Request, config: EmulatorConfig, folders: list[str]
) -> web.StreamResponse:
    """`folders`: the model folder names ComfyUI knows (folder_names_and_paths)."""
    folder = request.match_info["folder_name"]
    folder = LEGACY_NAMES.get(folder, folder)
    filename = request.rel_url.query.get("filename")
    if filename is None or not filename.endswith(".safetensors"):
        return web.Response(status=404)
    try:
        metadata = await asyncio.to_thread(_metadata, config, folders, folder, filename)
    except (OSError, ValueError, struct.error):  # ComfyUI: a 500
        return web.Response(status=500)
    if metadata is None:
        return web.Response(status=404)
    return web.json_response(metadata)


__all__ = ["MAX_HEADER", "safetensors_header", "view_metadata"]
