"""Which kind of output a ComfyUI history entry is: pure, from the history key and the extension.

ComfyUI reports outputs per node as `{"images": [...], "gifs": [...], "audio": [...], ...}`.
The key alone is not enough (VideoHelperSuite reports .mp4 files under "gifs", SaveAnimatedWEBP
under "images"), so the extension decides when it is known and the key only breaks ties.
"""

from __future__ import annotations

import mimetypes
import posixpath

from comfyrun.core.job import OutputType

#: Extensions the platform's mimetypes table may lack or get wrong.
_CONTENT_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".avif": "image/avif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".exr": "image/x-exr",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".txt": "text/plain",
    ".json": "application/json",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".latent": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}

_KEY_TYPES: dict[str, OutputType] = {
    "images": OutputType.IMAGE,
    "image": OutputType.IMAGE,
    "gifs": OutputType.VIDEO,
    "videos": OutputType.VIDEO,
    "video": OutputType.VIDEO,
    "animated": OutputType.IMAGE,
    "audio": OutputType.AUDIO,
    "audios": OutputType.AUDIO,
    "text": OutputType.TEXT,
    "texts": OutputType.TEXT,
    "latents": OutputType.LATENT,
    "latent": OutputType.LATENT,
}

_MAJOR_TYPES: dict[str, OutputType] = {
    "image": OutputType.IMAGE,
    "video": OutputType.VIDEO,
    "audio": OutputType.AUDIO,
    "text": OutputType.TEXT,
}


def content_type_for(filename: str) -> str:
    """The MIME type for a file name, "application/octet-stream" when unknown."""
    ext = posixpath.splitext(filename.lower())[1]
    if ext in _CONTENT_TYPES:
        return _CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(f"x{ext}") if ext else (None, None)
    return guessed or "application/octet-stream"


def classify_output(key: str, filename: str) -> tuple[OutputType, str]:
    """(output type, content type) for the file `filename` listed under the history key `key`."""
    content_type = content_type_for(filename)
    ext = posixpath.splitext(filename.lower())[1]
    if key in ("latents", "latent") or ext == ".latent":
        return OutputType.LATENT, content_type
    major = content_type.split("/", 1)[0]
    if major in _MAJOR_TYPES:
        return _MAJOR_TYPES[major], content_type
    if content_type == "application/octet-stream" and key in _KEY_TYPES:
        return _KEY_TYPES[key], content_type
    return OutputType.FILE, content_type


__all__ = ["classify_output", "content_type_for"]
