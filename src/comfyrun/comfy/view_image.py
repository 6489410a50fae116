"""ComfyUI's `/view` conversions of an image (server.py `view_image`), for its emulator and
comfyrun's face alike: `preview=<format>[;<quality>]` re-encodes it (webp or jpeg; webp where
`channel` holds an "a"), `channel=rgb` gives its colours alone and `channel=a` its alpha alone
(in an RGBA PNG). The editor's mask editor asks for the last two; its "preview format" setting
for the first."""

from __future__ import annotations

import io
from typing import BinaryIO

from PIL import Image


def wants_conversion(preview: str | None, channel: str | None) -> bool:
    """Whether `/view` with these parameters converts the file (else sends it as it is)."""
    return preview is not None or channel in ("rgb", "a")


def convert(source: str | BinaryIO, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """The converted image and its content type. OSError (PIL's UnidentifiedImageError is one)
    for a file that is no image."""
    with Image.open(source) as img:
        buffer = io.BytesIO()
        if preview is not None:
            info = preview.split(";")
            fmt = info[0] if info[0] in ("webp", "jpeg") and "a" not in (channel or "") else "webp"
            quality = int(info[-1]) if info[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


__all__ = ["convert", "wants_conversion"]
