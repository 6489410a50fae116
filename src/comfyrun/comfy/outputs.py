"""A prompt's outputs, as ComfyUI reports them in `executed` events and in history; no I/O.

A node's UI output is a dict of lists. Any list entry shaped `{filename, subfolder, type}` is a
file, whatever the key (`images`, `gifs`, `videos`, `audio`, `files`, `3d`, ...); everything
else (`{"text": ["..."]}`, `{"animated": [true]}`) is a plain value. Files keep any extra keys
(e.g. VideoHelperSuite's `format`, `frame_rate`) in `extra`.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MediaKind = Literal["image", "video", "audio", "text", "file"]

_EXTENSIONS: dict[str, tuple[MediaKind, str]] = {
    ".png": ("image", "image/png"),
    ".jpg": ("image", "image/jpeg"),
    ".jpeg": ("image", "image/jpeg"),
    ".webp": ("image", "image/webp"),
    ".gif": ("image", "image/gif"),
    ".bmp": ("image", "image/bmp"),
    ".tif": ("image", "image/tiff"),
    ".tiff": ("image", "image/tiff"),
    ".exr": ("image", "image/x-exr"),
    ".mp4": ("video", "video/mp4"),
    ".webm": ("video", "video/webm"),
    ".mov": ("video", "video/quicktime"),
    ".mkv": ("video", "video/x-matroska"),
    ".avi": ("video", "video/x-msvideo"),
    ".flac": ("audio", "audio/flac"),
    ".mp3": ("audio", "audio/mpeg"),
    ".wav": ("audio", "audio/wav"),
    ".ogg": ("audio", "audio/ogg"),
    ".opus": ("audio", "audio/opus"),
    ".m4a": ("audio", "audio/mp4"),
    ".txt": ("text", "text/plain"),
    ".json": ("text", "application/json"),
    ".glb": ("file", "model/gltf-binary"),
    ".gltf": ("file", "model/gltf+json"),
    ".obj": ("file", "model/obj"),
    ".safetensors": ("file", "application/octet-stream"),
    ".latent": ("file", "application/octet-stream"),
}

_KEY_KINDS: dict[str, MediaKind] = {
    "images": "image",
    "image": "image",
    "gifs": "video",
    "videos": "video",
    "video": "video",
    "audio": "audio",
    "audios": "audio",
    "text": "text",
    "texts": "text",
    "string": "text",
}

_DEFAULT_CONTENT_TYPES: dict[MediaKind, str] = {
    "image": "image/png",
    "video": "video/mp4",
    "audio": "audio/flac",
    "text": "text/plain",
    "file": "application/octet-stream",
}


def guess_media(key: str, filename: str | None = None) -> tuple[MediaKind, str]:
    """The media kind and content type of an output, from its file extension, then its key."""
    if filename:
        ext = posixpath.splitext(filename)[1].lower()
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        if guessed:
            major = guessed.split("/", 1)[0]
            kind: MediaKind = major if major in ("image", "video", "audio", "text") else "file"  # type: ignore[assignment]
            return kind, guessed
    kind = _KEY_KINDS.get(key.lower(), "file")
    if filename is None and kind != "text":
        return kind, "application/json"
    return kind, _DEFAULT_CONTENT_TYPES[kind]


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file ComfyUI wrote, fetchable through GET /view."""

    node_id: str
    key: str
    filename: str
    subfolder: str = ""
    type: str = "output"  # "output" | "temp" | "input"
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def media_kind(self) -> MediaKind:
        return guess_media(self.key, self.filename)[0]

    @property
    def content_type(self) -> str:
        return guess_media(self.key, self.filename)[1]

    @property
    def view_params(self) -> dict[str, str]:
        """The query string of GET /view for this file."""
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


@dataclass(frozen=True, slots=True)
class ValueOutput:
    """A non-file UI output, e.g. `{"text": ["hello"]}` → key "text", value ["hello"]."""

    node_id: str
    key: str
    value: Any = field(hash=False)

    @property
    def media_kind(self) -> MediaKind:
        return guess_media(self.key)[0]

    @property
    def content_type(self) -> str:
        return guess_media(self.key)[1]


OutputItem = FileRef | ValueOutput


def is_file_entry(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("filename"), str)
        and bool(value["filename"])
        and isinstance(value.get("subfolder", ""), str)
        and isinstance(value.get("type", "output"), str)
    )


def parse_node_output(node_id: str, output: Mapping[str, Any]) -> list[OutputItem]:
    """Split one node's UI output into files and values, keeping ComfyUI's order."""
    items: list[OutputItem] = []
    for key, value in output.items():
        if isinstance(value, list) and value and all(is_file_entry(v) for v in value):
            for entry in value:
                extra = {
                    k: v for k, v in entry.items() if k not in ("filename", "subfolder", "type")
                }
                items.append(
                    FileRef(
                        node_id=str(node_id),
                        key=str(key),
                        filename=entry["filename"],
                        subfolder=entry.get("subfolder") or "",
                        type=entry.get("type") or "output",
                        extra=extra,
                    )
                )
        elif isinstance(value, list):
            files = [v for v in value if is_file_entry(v)]
            rest = [v for v in value if not is_file_entry(v)]
            if files:
                items.extend(parse_node_output(node_id, {key: files}))
            if rest:
                items.append(ValueOutput(str(node_id), str(key), rest))
        else:
            items.append(ValueOutput(str(node_id), str(key), value))
    return items


def parse_outputs(outputs: Mapping[str, Any]) -> dict[str, list[OutputItem]]:
    """Parse history's `outputs` ({node_id: ui_output}); nodes with no output are dropped."""
    parsed: dict[str, list[OutputItem]] = {}
    for node_id, output in outputs.items():
        if not isinstance(output, Mapping):
            continue
        items = parse_node_output(str(node_id), output)
        if items:
            parsed[str(node_id)] = items
    return parsed


def files(outputs: Mapping[str, list[OutputItem]]) -> list[FileRef]:
    """Every file of a parsed output map, in node order."""
    return [item for items in outputs.values() for item in items if isinstance(item, FileRef)]


__all__ = [
    "FileRef",
    "MediaKind",
    "OutputItem",
    "ValueOutput",
    "files",
    "guess_media",
    "is_file_entry",
    "parse_node_output",
    "parse_outputs",
]
