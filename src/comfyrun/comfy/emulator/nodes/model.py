"""The model nodes of ComfyUI's default text-to-image graph, simulated.

Their outputs are small records. KSampler spends `step_time_s` per step, reporting progress
(and a preview when previews are on); VAEDecode draws a deterministic picture from the seed,
the prompt texts and the size. "broken_for_test*" checkpoints, or model files that are not
safetensors, fail like safetensors does.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from comfyrun.comfy.emulator.images import FloatArray
from comfyrun.comfy.emulator.nodes.base import EmulatedError, NodeContext, NodeFn, NodeResult


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


SAFETENSOR_ERROR = "safetensors._safetensors_rust.SafetensorError"


def _safetensors_problem(path: Path) -> str | None:
    """Why safetensors would refuse this file's header, or None."""
    with path.open("rb") as f:
        head = f.read(8)
        size = path.stat().st_size
        if len(head) < 8:
            return "Error while deserializing header: HeaderTooSmall"
        length = struct.unpack("<Q", head)[0]
        if length > size - 8:
            return "Error while deserializing header: header too large"
        try:
            header = json.loads(f.read(length) or b"null")
        except ValueError:
            header = None
    if not isinstance(header, dict):
        return "Error while deserializing header: InvalidHeaderDeserialization"
    return None


def _check_checkpoint(ctx: NodeContext, ckpt_name: str) -> None:
    """Fail like safetensors does on a checkpoint that is not a safetensors file."""
    path = ctx.model_path("checkpoints", ckpt_name)
    if path is not None and path.is_file():
        problem = _safetensors_problem(path) if ckpt_name.endswith(".safetensors") else None
    elif ckpt_name.startswith("broken_for_test"):
        problem = "Error while deserializing header: header too large"
    else:
        problem = None
    if problem is not None:
        raise EmulatedError(SAFETENSOR_ERROR, problem + "\n")


def checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    _check_checkpoint(ctx, ckpt_name)
    ctx.load_model("checkpoints", ckpt_name)
    model = Model(ckpt_name)
    return NodeResult((model, {"clip": ckpt_name}, {"vae": ckpt_name}))


def lora_loader(
    ctx: NodeContext,
    model: Model,
    clip: Any,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
) -> NodeResult:
    ctx.load_model("loras", lora_name)
    return NodeResult((Model(model.ckpt_name, (*model.loras, lora_name)), clip))


def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    return NodeResult(({"vae": vae_name},))


def clip_set_last_layer(ctx: NodeContext, clip: Any, stop_at_clip_layer: int) -> NodeResult:
    return NodeResult((clip,))


def clip_text_encode(ctx: NodeContext, clip: Any, text: str) -> NodeResult:
    return NodeResult((Conditioning(text),))


def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeResult:
    return NodeResult((Latent(width, height, batch_size),))


def _latent_preview(latent: Latent, step: int) -> Image.Image:
    width, height = max(8, latent.width // 8), max(8, latent.height // 8)
    rng = np.random.default_rng(int(latent.fingerprint()[:8], 16) + step)
    noise = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return Image.fromarray(noise).resize((latent.width, latent.height), Image.Resampling.NEAREST)


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


def vae_decode(ctx: NodeContext, samples: Latent, vae: Any) -> NodeResult:
    return NodeResult((_decode(samples),))


def vae_encode(ctx: NodeContext, pixels: FloatArray, vae: Any) -> NodeResult:
    return NodeResult((Latent(int(pixels.shape[2]), int(pixels.shape[1]), int(pixels.shape[0])),))


#: The loaders of model files (ctx.load_model): class type -> (model folder, input naming it).
MODEL_LOADERS: dict[str, tuple[str, str]] = {
    "CheckpointLoaderSimple": ("checkpoints", "ckpt_name"),
    "LoraLoader": ("loras", "lora_name"),
}

NODES: dict[str, NodeFn] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "LoraLoader": lora_loader,
    "VAELoader": vae_loader,
    "CLIPSetLastLayer": clip_set_last_layer,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
}
