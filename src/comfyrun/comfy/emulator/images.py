"""Image files the way ComfyUI names, writes and reads them (IMAGE = float32 [B,H,W,C] 0..1)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

FloatArray = NDArray[np.float32]


class SaveOutsideOutputError(Exception):
    """ComfyUI refuses a filename_prefix that leaves the output folder."""


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for name, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", str(now.tm_mon).zfill(2)),
        ("%day%", str(now.tm_mday).zfill(2)),
        ("%hour%", str(now.tm_hour).zfill(2)),
        ("%minute%", str(now.tm_min).zfill(2)),
        ("%second%", str(now.tm_sec).zfill(2)),
    ):
        prefix = prefix.replace(name, value)
    return prefix


def save_image_path(
    prefix: str, output_dir: Path, width: int = 0, height: int = 0
) -> tuple[Path, str, int, str]:
    """(folder, file stem, next counter, subfolder) as ComfyUI's get_save_image_path."""
    if "%" in prefix:
        prefix = _compute_vars(prefix, width, height)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    root = os.path.abspath(output_dir)
    folder = os.path.abspath(os.path.join(root, subfolder))
    if os.path.commonpath((root, folder)) != root:
        raise SaveOutsideOutputError(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {root}"
        )
    counter = 1
    try:
        best = 0
        stem_len = len(filename)
        for name in os.listdir(folder):
            head = name[: stem_len + 1]
            if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
                continue
            try:
                digits = int(name[stem_len + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            best = max(best, digits)
            counter = best + 1
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    return Path(folder), filename, counter, subfolder.replace("\\", "/")


def to_pil(image: FloatArray) -> Image.Image:
    """One [H,W,C] float image to a Pillow image."""
    data = np.clip(255.0 * image, 0, 255).astype(np.uint8)
    if data.shape[-1] == 1:
        return Image.fromarray(data[..., 0], mode="L")
    return Image.fromarray(data)


def from_pil(img: Image.Image) -> FloatArray:
    """A Pillow image to a [1,H,W,3] float batch."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return rgb[None, ...]


def save_images(
    images: FloatArray,
    prefix: str,
    folder_root: Path,
    kind: str,
    metadata: dict[str, Any] | None,
    compress_level: int,
) -> list[dict[str, str]]:
    """Write a batch as "<prefix>_<counter:05>_.png" files; return ComfyUI's image entries."""
    height, width = int(images.shape[1]), int(images.shape[2])
    folder, stem, counter, subfolder = save_image_path(prefix, folder_root, width, height)
    results: list[dict[str, str]] = []
    for batch_number, image in enumerate(images):
        info = PngInfo()
        for key, value in (metadata or {}).items():
            info.add_text(key, json.dumps(value))
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        to_pil(image).save(folder / name, pnginfo=info, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


_T = TypeVar("_T")
_R = TypeVar("_R")


def pillow(fn: Callable[[_T], _R], arg: _T) -> _R:
    """`fn(arg)`, and again with truncated files allowed if Pillow failed: ComfyUI's
    `node_helpers.pillow`, through which its LoadImage opens and transposes (hence decodes) an
    image, so that a truncated file loads (what it lacks comes out black) instead of failing."""
    previous = None
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        if previous is not None:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image(path: Path) -> tuple[FloatArray, FloatArray]:
    """(IMAGE [1,H,W,3], MASK [1,H,W]) as ComfyUI's LoadImage for a single-frame file."""
    with pillow(Image.open, path) as opened:
        img = pillow(ImageOps.exif_transpose, opened) or opened
        image = from_pil(img)
        if "A" in img.getbands():
            alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
            mask = 1.0 - alpha
        elif img.mode == "P" and "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            mask = 1.0 - alpha
        else:
            mask = np.zeros((64, 64), dtype=np.float32)
    return image.astype(np.float32), mask[None, ...].astype(np.float32)
