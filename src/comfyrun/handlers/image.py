"""The built-in `image` handler: resize, thumbnail and convert images with Pillow.

params (all optional):
    format     "png" | "jpeg" | "webp" | "gif" | "bmp" | "tiff" (default: each input's own)
    quality    1-100, for jpeg and webp (default: Pillow's)
    lossless   webp only
    width, height   resize to this size; with only one of them the aspect ratio is kept
    max_size   thumbnail: fit within max_size x max_size (or [w, h]), keeping the ratio

Each input image gives one output, named after it with the new extension. Inputs that are not
images are skipped; a job with no image input fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.errors import HandlerError, InvalidParams
from comfyrun.handlers.context import HandlerContext
from comfyrun.handlers.registry import Handler

FORMATS: dict[str, tuple[str, str]] = {  # name -> (Pillow format, extension)
    "png": ("PNG", "png"),
    "jpeg": ("JPEG", "jpg"),
    "jpg": ("JPEG", "jpg"),
    "webp": ("WEBP", "webp"),
    "gif": ("GIF", "gif"),
    "bmp": ("BMP", "bmp"),
    "tiff": ("TIFF", "tiff"),
}
MAX_SIDE = 16384
_KNOWN = {"format", "quality", "lossless", "width", "height", "max_size"}


def check_params(params: JSON) -> JSON:
    unknown = set(params) - _KNOWN
    if unknown:
        raise InvalidParams(
            f"image: unknown params {sorted(unknown)}", details={"params": sorted(unknown)}
        )
    fmt = params.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in FORMATS):
        raise InvalidParams(f"image: format is one of {sorted(FORMATS)}", details={"format": fmt})
    quality = params.get("quality")
    if quality is not None and not _int_in(quality, 1, 100):
        raise InvalidParams("image: quality is an integer from 1 to 100")
    if "lossless" in params and not isinstance(params["lossless"], bool):
        raise InvalidParams("image: lossless is true or false")
    for side in ("width", "height"):
        if params.get(side) is not None and not _int_in(params[side], 1, MAX_SIDE):
            raise InvalidParams(f"image: {side} is an integer from 1 to {MAX_SIDE}")
    box = params.get("max_size")
    if box is not None:
        sides = box if isinstance(box, list) else [box, box]
        if len(sides) != 2 or not all(_int_in(s, 1, MAX_SIDE) for s in sides):
            raise InvalidParams(f"image: max_size is a size from 1 to {MAX_SIDE}, or [w, h]")
    return params


def run(ctx: HandlerContext) -> None:
    from PIL import Image, UnidentifiedImageError

    params = check_params(ctx.params)
    done = 0
    images = [f for f in ctx.inputs if f.content_type.startswith("image/")] or list(ctx.inputs)
    for i, item in enumerate(images):
        ctx.cancel.raise_if_cancelled()
        try:
            with Image.open(item.path) as opened:
                opened.load()
                image = opened.copy()
                source_format = opened.format or "PNG"
        except (UnidentifiedImageError, OSError):
            ctx.log.info("image: %s is not an image; skipped", item.name)
            continue
        image = _transform(image, params)
        fmt, ext = _format_for(params.get("format"), source_format)
        if fmt == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        save: dict[str, Any] = {}
        if params.get("quality") is not None and fmt in ("JPEG", "WEBP"):
            save["quality"] = int(params["quality"])
        if params.get("lossless") and fmt == "WEBP":
            save["lossless"] = True
        target = ctx.outputs.path_for(f"{Path(item.name).stem}.{ext}")
        image.save(target, format=fmt, **save)
        ctx.outputs.add(target)
        done += 1
        ctx.progress.report((i + 1) / len(images), step=i + 1, steps=len(images))
    if done == 0:
        raise HandlerError("image: the job has no image input", code="no_input")


def _transform(image: Any, params: JSON) -> Any:
    width: int | None = params.get("width")
    height: int | None = params.get("height")
    if width is not None or height is not None:
        w, h = image.size
        if width is None:
            assert height is not None
            width = max(1, round(w * height / h))
        elif height is None:
            height = max(1, round(h * width / w))
        image = image.resize((width, height))
    box = params.get("max_size")
    if box is not None:
        sides = box if isinstance(box, list) else [box, box]
        image.thumbnail((int(sides[0]), int(sides[1])))
    return image


def _format_for(name: Any, source_format: str) -> tuple[str, str]:
    if isinstance(name, str) and name.lower() in FORMATS:
        return FORMATS[name.lower()]
    for fmt, ext in FORMATS.values():
        if fmt == source_format.upper():
            return fmt, ext
    return "PNG", "png"


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


HANDLER = Handler("image", run, check_params, "Resize, thumbnail and convert images (Pillow)")

__all__ = ["HANDLER", "check_params", "run"]
