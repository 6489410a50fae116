"""Image nodes computed for real with Pillow/numpy (IMAGE = float32 [B,H,W,C] in 0..1)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from comfyrun.comfy.emulator.images import (
    FloatArray,
    from_pil,
    load_image,
    save_images,
    to_pil,
)
from comfyrun.comfy.emulator.nodes.base import (
    NodeContext,
    NodeFn,
    NodeResult,
    hidden_metadata,
    resolve_input,
    temp_prefix,
)


def empty_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0
) -> NodeResult:
    rgb = [((color >> 16) & 0xFF) / 255.0, ((color >> 8) & 0xFF) / 255.0, (color & 0xFF) / 255.0]
    image = np.empty((batch_size, height, width, 3), dtype=np.float32)
    image[...] = np.array(rgb, dtype=np.float32)
    return NodeResult((image,))


def image_invert(ctx: NodeContext, image: FloatArray) -> NodeResult:
    return NodeResult(((1.0 - image).astype(np.float32),))


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _scale(image: FloatArray, method: str, width: int, height: int, crop: str) -> FloatArray:
    _, old_h, old_w, _ = image.shape
    if width == 0 and height == 0:
        return image
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    frames = []
    for frame in image:
        img = to_pil(frame)
        if crop == "center":
            old_aspect, new_aspect = old_w / old_h, width / height
            x = y = 0
            cw, ch = old_w, old_h
            if old_aspect > new_aspect:
                cw = round(old_h * new_aspect)
                x = (old_w - cw) // 2
            elif old_aspect < new_aspect:
                ch = round(old_w / new_aspect)
                y = (old_h - ch) // 2
            img = img.crop((x, y, x + cw, y + ch))
        frames.append(
            from_pil(img.resize((width, height), _RESAMPLE.get(method, Image.Resampling.BILINEAR)))[
                0
            ]
        )
    return np.stack(frames).astype(np.float32)


def image_scale(
    ctx: NodeContext, image: FloatArray, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    return NodeResult((_scale(image, upscale_method, width, height, crop),))


def image_scale_by(
    ctx: NodeContext, image: FloatArray, upscale_method: str, scale_by: float
) -> NodeResult:
    width = max(1, round(image.shape[2] * scale_by))
    height = max(1, round(image.shape[1] * scale_by))
    return NodeResult((_scale(image, upscale_method, width, height, "disabled"),))


def image_blur(ctx: NodeContext, image: FloatArray, blur_radius: int, sigma: float) -> NodeResult:
    frames = [from_pil(to_pil(f).filter(ImageFilter.GaussianBlur(radius=sigma)))[0] for f in image]
    return NodeResult((np.stack(frames).astype(np.float32),))


def image_flip(ctx: NodeContext, image: FloatArray, flip_method: str) -> NodeResult:
    axis = 1 if flip_method.startswith("x") else 2
    return NodeResult((np.ascontiguousarray(np.flip(image, axis=axis)),))


def image_rotate(ctx: NodeContext, image: FloatArray, rotation: str) -> NodeResult:
    turns = {"none": 0, "90 degrees": 3, "180 degrees": 2, "270 degrees": 1}.get(rotation, 0)
    return NodeResult((np.ascontiguousarray(np.rot90(image, k=turns, axes=(1, 2))),))


def image_crop(
    ctx: NodeContext, image: FloatArray, width: int, height: int, x: int, y: int
) -> NodeResult:
    x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
    return NodeResult((image[:, y : y + height, x : x + width, :].copy(),))


def repeat_image_batch(ctx: NodeContext, image: FloatArray, amount: int) -> NodeResult:
    return NodeResult((np.concatenate([image] * amount, axis=0),))


def get_image_size(ctx: NodeContext, image: FloatArray) -> NodeResult:
    batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    ctx.send_text(f"width: {width}, height: {height}\n batch size: {batch}")
    return NodeResult((width, height, batch))


def load_image_node(ctx: NodeContext, image: str) -> NodeResult:
    img, mask = load_image(resolve_input(ctx, image))
    return NodeResult((img, mask))


def load_image_mask(ctx: NodeContext, image: str, channel: str = "alpha") -> NodeResult:
    _, mask = load_image(resolve_input(ctx, image))
    return NodeResult((mask,))


def save_image(
    ctx: NodeContext, images: FloatArray, filename_prefix: str = "ComfyUI"
) -> NodeResult:
    results = save_images(
        images, filename_prefix, ctx.output_dir, "output", hidden_metadata(ctx), 4
    )
    return NodeResult((), {"images": results})


def preview_image(ctx: NodeContext, images: FloatArray) -> NodeResult:
    prefix = temp_prefix(ctx)
    results = save_images(images, prefix, ctx.temp_dir, "temp", hidden_metadata(ctx), 1)
    return NodeResult((), {"images": results})


NODES: dict[str, NodeFn] = {
    "EmptyImage": empty_image,
    "ImageInvert": image_invert,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageBlur": image_blur,
    "ImageFlip": image_flip,
    "ImageRotate": image_rotate,
    "ImageCrop": image_crop,
    "RepeatImageBatch": repeat_image_batch,
    "GetImageSize": get_image_size,
    "LoadImage": load_image_node,
    "LoadImageMask": load_image_mask,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
}
