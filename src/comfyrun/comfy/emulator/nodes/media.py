"""Nodes whose outputs are not still images: animated WebP, text, audio, primitives."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from comfyrun.comfy.emulator.images import FloatArray, save_image_path, to_pil
from comfyrun.comfy.emulator.nodes.base import NodeContext, NodeFn, NodeResult, temp_prefix


def save_animated_webp(
    ctx: NodeContext,
    images: FloatArray,
    filename_prefix: str = "ComfyUI",
    fps: float = 6.0,
    lossless: bool = True,
    quality: int = 80,
    method: str = "default",
) -> NodeResult:

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


def save_audio(
    ctx: NodeContext, audio: dict[str, Any], filename_prefix: str = "audio/ComfyUI"
) -> NodeResult:
    return NodeResult((), {"audio": _save_audio(audio, filename_prefix, ctx.output_dir, "output")})


def preview_audio(ctx: NodeContext, audio: dict[str, Any]) -> NodeResult:
    prefix = temp_prefix(ctx)
    return NodeResult((), {"audio": _save_audio(audio, prefix, ctx.temp_dir, "temp")})


def primitive(ctx: NodeContext, value: Any) -> NodeResult:
    return NodeResult((value,))


NODES: dict[str, NodeFn] = {
    "SaveAnimatedWEBP": save_animated_webp,
    "PreviewAny": preview_any,
    "EmptyAudio": empty_audio,
    "SaveAudio": save_audio,
    "PreviewAudio": preview_audio,
    "PrimitiveString": primitive,
    "PrimitiveStringMultiline": primitive,
    "PrimitiveInt": primitive,
    "PrimitiveFloat": primitive,
    "PrimitiveBoolean": primitive,
}
