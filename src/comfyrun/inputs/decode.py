"""Inline input data: base64 text or a data: URI, decoded and checked (pure)."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from comfyrun.errors import InputRejected

_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")

#: (magic bytes at offset, offset, content type), for inputs that do not say what they are.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"ftypavif", 4, "image/avif"),
    (b"ftyp", 4, "video/mp4"),
    (b"\x1aE\xdf\xa3", 0, "video/webm"),
    (b"ID3", 0, "audio/mpeg"),
    (b"fLaC", 0, "audio/flac"),
    (b"OggS", 0, "audio/ogg"),
)


def sniff_content_type(data: bytes) -> str | None:
    """The content type the first bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}[data[8:12]]
    for magic, offset, content_type in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return content_type
    return None


def decode_data(data: str, *, max_bytes: int, index: int | None = None) -> tuple[bytes, str | None]:
    """Decode base64 text (standard or URL-safe alphabet, padding optional, whitespace ignored) or
    a data: URI. Returns (bytes, declared content type or None). Raises InputRejected when the
    text is not valid or the decoded size is over `max_bytes`."""
    details: dict[str, object] = {"index": index}
    declared: str | None = None
    payload = data
    is_base64 = True
    match = _DATA_URI.match(data)
    if data[:5].lower() == "data:":
        if match is None:
            raise InputRejected(
                "malformed data: URI", details={**details, "reason": "bad_data_uri"}
            )
        declared = match.group("type").strip().lower() or None
        is_base64 = match.group("b64") is not None
        payload = data[match.end() :]
    if is_base64:
        payload = _WHITESPACE.sub("", payload)
        if len(payload) // 4 * 3 > max_bytes + 2:
            raise _too_large(max_bytes, details)
        payload = payload.replace("-", "+").replace("_", "/")
        payload += "=" * (-len(payload) % 4)
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputRejected(
                f"input data is not valid base64: {exc}",
                details={**details, "reason": "bad_base64"},
            ) from exc
    else:
        raw = unquote_to_bytes(payload)
    if len(raw) > max_bytes:
        raise _too_large(max_bytes, details)
    if not raw:
        raise InputRejected("input data is empty", details={**details, "reason": "empty"})
    return raw, declared


def _too_large(max_bytes: int, details: dict[str, object]) -> InputRejected:
    return InputRejected(
        f"input is larger than {max_bytes} bytes",
        details={**details, "reason": "file_too_large", "limit": max_bytes},
    )


__all__ = ["decode_data", "sniff_content_type"]
