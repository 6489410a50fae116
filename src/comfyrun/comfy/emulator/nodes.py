"""The node implementations the emulator runs for real (Pillow/numpy) or simulates.

Each node is a function `(ctx, **inputs) -> NodeResult`. The model nodes of ComfyUI's default
text-to-image graph are simulated: their outputs are small records, KSampler spends
`step_time_s` per step reporting progress, and VAEDecode draws a deterministic picture from
the seed, the prompt texts and the size. Any class type in object_info without an entry in
NODES fails at run time with a clear execution_error.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFilter

from comfyrun.comfy.emulator.images import FloatArray, from_pil, load_image, save_images, to_pil


class NodeContext(Protocol):
    """What a running node may use; the executor provides it."""

    node_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    output_dir: Path
    input_dir: Path
    temp_dir: Path
    models_dir: Path | None
    step_time_s: float

    def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        """Report sampler progress; raises Interrupted if an interrupt is pending."""

    def check_interrupt(self) -> None:
        """Raise Interrupted if an interrupt is pending."""

    def sleep(self, seconds: float) -> None:
        """Spend time like real work would (not interruptible: ComfyUI checks between steps)."""

    def send_text(self, text: str) -> None:
        """A TEXT binary frame (broadcast) for this node."""

    def node_state(self) -> dict[str, Any]:
        """Per-node-id state that lives as long as the server (PreviewImage's random prefix)."""


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class EmulatedError(Exception):
    """A node failure reported with a chosen ComfyUI exception_type."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class NotImplementedNode(EmulatedError):
    def __init__(self, class_type: str) -> None:
        super().__init__(
            "NotImplementedError",
            f"The comfyrun emulator has no implementation of node {class_type}; it only "
            "validates it. Use a node the emulator implements or a real ComfyUI.",
        )


@dataclass(frozen=True)
class Model:
    ckpt_name: str
    loras: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conditioning:
    text: str


@dataclass
class Latent:
    width: int
    height: int
    batch_size: int
    seed: int | None = None
    positive: str = ""
    negative: str = ""
    steps: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        data = [
            self.width,
            self.height,
            self.batch_size,
            self.seed,
            self.positive,
            self.negative,
            self.steps,
        ]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()


NodeFn = Callable[..., NodeResult]
NODES: dict[str, NodeFn] = {}


def node(class_type: str) -> Callable[[NodeFn], NodeFn]:
    def register(fn: NodeFn) -> NodeFn:
        NODES[class_type] = fn
        return fn

    return register


def _hidden_metadata(ctx: NodeContext) -> dict[str, Any]:
    meta: dict[str, Any] = {"prompt": ctx.prompt}
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        meta[key] = value
    return meta


@node("EmptyImage")
def empty_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0
) -> NodeResult:
    rgb = [((color >> 16) & 0xFF) / 255.0, ((color >> 8) & 0xFF) / 255.0, (color & 0xFF) / 255.0]
    image = np.empty((batch_size, height, width, 3), dtype=np.float32)
    image[...] = np.array(rgb, dtype=np.float32)
    return NodeResult((image,))


@node("ImageInvert")
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


@node("ImageScale")
def image_scale(
    ctx: NodeContext, image: FloatArray, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    return NodeResult((_scale(image, upscale_method, width, height, crop),))


@node("ImageScaleBy")
def image_scale_by(
    ctx: NodeContext, image: FloatArray, upscale_method: str, scale_by: float
) -> NodeResult:
    width = max(1, round(image.shape[2] * scale_by))
    height = max(1, round(image.shape[1] * scale_by))
    return NodeResult((_scale(image, upscale_method, width, height, "disabled"),))


@node("ImageBlur")
def image_blur(ctx: NodeContext, image: FloatArray, blur_radius: int, sigma: float) -> NodeResult:
    frames = [from_pil(to_pil(f).filter(ImageFilter.GaussianBlur(radius=sigma)))[0] for f in image]
    return NodeResult((np.stack(frames).astype(np.float32),))


@node("ImageFlip")
def image_flip(ctx: NodeContext, image: FloatArray, flip_method: str) -> NodeResult:
    axis = 1 if flip_method.startswith("x") else 2
    return NodeResult((np.ascontiguousarray(np.flip(image, axis=axis)),))


@node("ImageRotate")
def image_rotate(ctx: NodeContext, image: FloatArray, rotation: str) -> NodeResult:
    turns = {"none": 0, "90 degrees": 3, "180 degrees": 2, "270 degrees": 1}.get(rotation, 0)
    return NodeResult((np.ascontiguousarray(np.rot90(image, k=turns, axes=(1, 2))),))


@node("ImageCrop")
def image_crop(
    ctx: NodeContext, image: FloatArray, width: int, height: int, x: int, y: int
) -> NodeResult:
    x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
    return NodeResult((image[:, y : y + height, x : x + width, :].copy(),))


@node("RepeatImageBatch")
def repeat_image_batch(ctx: NodeContext, image: FloatArray, amount: int) -> NodeResult:
    return NodeResult((np.concatenate([image] * amount, axis=0),))


@node("GetImageSize")
def get_image_size(ctx: NodeContext, image: FloatArray) -> NodeResult:
    batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    ctx.send_text(f"width: {width}, height: {height}\n batch size: {batch}")
    return NodeResult((width, height, batch))


def _resolve_input(ctx: NodeContext, name: str) -> Path:
    for suffix, base in (
        (" [output]", ctx.output_dir),
        (" [input]", ctx.input_dir),
        (" [temp]", ctx.temp_dir),
    ):
        if name.endswith(suffix.strip()):
            return base / name[: -len(suffix)]
    return ctx.input_dir / name


def annotated_exists(input_dir: Path, output_dir: Path, temp_dir: Path, name: str) -> bool:
    for suffix, base in ((" [output]", output_dir), (" [input]", input_dir), (" [temp]", temp_dir)):
        if name.endswith(suffix.strip()):
            return (base / name[: -len(suffix)]).is_file()
    return (input_dir / name).is_file()


@node("LoadImage")
def load_image_node(ctx: NodeContext, image: str) -> NodeResult:
    img, mask = load_image(_resolve_input(ctx, image))
    return NodeResult((img, mask))


@node("LoadImageMask")
def load_image_mask(ctx: NodeContext, image: str, channel: str = "alpha") -> NodeResult:
    _, mask = load_image(_resolve_input(ctx, image))
    return NodeResult((mask,))


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        digest.update(path.read_bytes())
    except OSError:
        return ""
    return digest.hexdigest()


@node("SaveImage")
def save_image(
    ctx: NodeContext, images: FloatArray, filename_prefix: str = "ComfyUI"
) -> NodeResult:
    results = save_images(
        images, filename_prefix, ctx.output_dir, "output", _hidden_metadata(ctx), 4
    )
    return NodeResult((), {"images": results})


@node("PreviewImage")
def preview_image(ctx: NodeContext, images: FloatArray) -> NodeResult:
    state = ctx.node_state()
    if "prefix_append" not in state:
        state["prefix_append"] = "_temp_" + "".join(
            random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5)
        )
    prefix = "ComfyUI" + str(state["prefix_append"])
    results = save_images(images, prefix, ctx.temp_dir, "temp", _hidden_metadata(ctx), 1)
    return NodeResult((), {"images": results})


@node("SaveAnimatedWEBP")
def save_animated_webp(
    ctx: NodeContext,
    images: FloatArray,
    filename_prefix: str = "ComfyUI",
    fps: float = 6.0,
    lossless: bool = True,
    quality: int = 80,
    method: str = "default",
) -> NodeResult:
    from comfyrun.comfy.emulator.images import save_image_path

    folder, stem, counter, subfolder = save_image_path(
        filename_prefix, ctx.output_dir, int(images.shape[2]), int(images.shape[1])
    )
    frames = [to_pil(f) for f in images]
    name = f"{stem}_{counter:05}_.webp"
    frames[0].save(
        folder / name,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        lossless=lossless,
        quality=quality,
        method={"default": 4, "fastest": 0, "slowest": 6}.get(method, 4),
    )
    entry = {"filename": name, "subfolder": subfolder, "type": "output"}
    return NodeResult((), {"images": [entry], "animated": [len(frames) != 1]})


@node("PreviewAny")
def preview_any(ctx: NodeContext, source: Any) -> NodeResult:
    if isinstance(source, str):
        text = source
    elif isinstance(source, int | float | bool):
        text = str(source)
    elif isinstance(source, np.ndarray):
        text = f"array of shape {list(source.shape)}"
    else:
        try:
            text = json.dumps(source, indent=4)
        except (TypeError, ValueError):
            text = str(source)
    return NodeResult((), {"text": [text]})


@node("EmptyAudio")
def empty_audio(
    ctx: NodeContext, duration: float, sample_rate: int, channels: int = 2
) -> NodeResult:
    samples = round(duration * sample_rate)
    return NodeResult(
        (
            {
                "waveform": np.zeros((1, channels, samples), dtype=np.float32),
                "sample_rate": sample_rate,
            },
        )
    )


def _save_audio(audio: dict[str, Any], prefix: str, root: Path, kind: str) -> list[dict[str, str]]:
    """WAV files named like ComfyUI's audio saves (it writes FLAC; the stdlib has no FLAC)."""
    from comfyrun.comfy.emulator.images import save_image_path

    folder, stem, counter, subfolder = save_image_path(prefix, root)
    results = []
    for batch_number, waveform in enumerate(np.asarray(audio["waveform"], dtype=np.float32)):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.wav"
        pcm = (np.clip(waveform.T, -1.0, 1.0) * 32767).astype("<i2")
        with wave.open(str(folder / name), "wb") as out:
            out.setnchannels(int(waveform.shape[0]))
            out.setsampwidth(2)
            out.setframerate(int(audio["sample_rate"]))
            out.writeframes(pcm.tobytes())
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


@node("SaveAudio")
def save_audio(
    ctx: NodeContext, audio: dict[str, Any], filename_prefix: str = "audio/ComfyUI"
) -> NodeResult:
    return NodeResult((), {"audio": _save_audio(audio, filename_prefix, ctx.output_dir, "output")})


@node("PreviewAudio")
def preview_audio(ctx: NodeContext, audio: dict[str, Any]) -> NodeResult:
    state = ctx.node_state()
    if "prefix_append" not in state:
        state["prefix_append"] = "_temp_" + "".join(
            random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5)
        )
    prefix = "ComfyUI" + str(state["prefix_append"])
    return NodeResult((), {"audio": _save_audio(audio, prefix, ctx.temp_dir, "temp")})


@node("PrimitiveString")
@node("PrimitiveStringMultiline")
@node("PrimitiveInt")
@node("PrimitiveFloat")
@node("PrimitiveBoolean")
def primitive(ctx: NodeContext, value: Any) -> NodeResult:
    return NodeResult((value,))


# ---- simulated models --------------------------------------------------------------------


def _check_checkpoint(ctx: NodeContext, ckpt_name: str) -> None:
    """Fail like safetensors does on a file that is not a safetensors file."""
    path = ctx.models_dir / "checkpoints" / ckpt_name if ctx.models_dir is not None else None
    if path is not None and path.is_file():
        data = path.read_bytes()[:8]
        size = path.stat().st_size
        if ckpt_name.endswith(".safetensors") and (
            len(data) < 8 or struct.unpack("<Q", data)[0] > size - 8
        ):
            raise EmulatedError(
                "safetensors._safetensors_rust.SafetensorError",
                "Error while deserializing header: header too large\n",
            )
        return
    if ckpt_name.startswith("broken_for_test"):
        raise EmulatedError(
            "safetensors._safetensors_rust.SafetensorError",
            "Error while deserializing header: header too large\n",
        )


@node("CheckpointLoaderSimple")
def checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    _check_checkpoint(ctx, ckpt_name)
    model = Model(ckpt_name)
    return NodeResult((model, {"clip": ckpt_name}, {"vae": ckpt_name}))


@node("LoraLoader")
def lora_loader(
    ctx: NodeContext,
    model: Model,
    clip: Any,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
) -> NodeResult:
    return NodeResult((Model(model.ckpt_name, (*model.loras, lora_name)), clip))


@node("VAELoader")
def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    return NodeResult(({"vae": vae_name},))


@node("CLIPSetLastLayer")
def clip_set_last_layer(ctx: NodeContext, clip: Any, stop_at_clip_layer: int) -> NodeResult:
    return NodeResult((clip,))


@node("CLIPTextEncode")
def clip_text_encode(ctx: NodeContext, clip: Any, text: str) -> NodeResult:
    return NodeResult((Conditioning(text),))


@node("EmptyLatentImage")
def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeResult:
    return NodeResult((Latent(width, height, batch_size),))


def _latent_preview(latent: Latent, step: int) -> Image.Image:
    width, height = max(8, latent.width // 8), max(8, latent.height // 8)
    rng = np.random.default_rng(int(latent.fingerprint()[:8], 16) + step)
    noise = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return Image.fromarray(noise).resize((latent.width, latent.height), Image.Resampling.NEAREST)


@node("KSampler")
def ksampler(
    ctx: NodeContext,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeResult:
    out = Latent(
        latent_image.width,
        latent_image.height,
        latent_image.batch_size,
        seed=seed,
        positive=getattr(positive, "text", str(positive)),
        negative=getattr(negative, "text", str(negative)),
        steps=steps,
        extras={
            "model": model.ckpt_name,
            "loras": list(model.loras),
            "cfg": cfg,
            "sampler": sampler_name,
        },
    )
    for step in range(1, steps + 1):
        ctx.sleep(ctx.step_time_s)
        ctx.progress(step, steps, _latent_preview(out, step))
    return NodeResult((out,))


def _decode(latent: Latent) -> FloatArray:
    rng = np.random.default_rng(int(latent.fingerprint()[:16], 16))
    h, w = latent.height, latent.width
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    frames = []
    for _ in range(latent.batch_size):
        a, b, c = rng.random(3).astype(np.float32)
        base = np.stack(
            [a * xs + (1 - a) * ys, b * ys + (1 - b) * (1 - xs), c * (xs * ys)], axis=-1
        )
        base = np.broadcast_to(base, (h, w, 3))
        noise = rng.random((h, w, 3)).astype(np.float32) * 0.15
        frames.append(np.clip(base * 0.85 + noise, 0.0, 1.0))
    return np.stack(frames).astype(np.float32)


@node("VAEDecode")
def vae_decode(ctx: NodeContext, samples: Latent, vae: Any) -> NodeResult:
    return NodeResult((_decode(samples),))


@node("VAEEncode")
def vae_encode(ctx: NodeContext, pixels: FloatArray, vae: Any) -> NodeResult:
    return NodeResult((Latent(int(pixels.shape[2]), int(pixels.shape[1]), int(pixels.shape[0])),))
