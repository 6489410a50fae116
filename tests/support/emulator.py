"""Helpers for tests that need a running ComfyUI emulator (importable by every test area).

from tests.support.emulator import running_emulator, image_workflow

async with running_emulator(tmp_path, step_time_s=0.05) as emu:
    ... emu.url, emu.faults ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from comfyrun.comfy.emulator import Emulator, EmulatorConfig, start_emulator


def emulator_config(tmp_path: Path, **overrides: Any) -> EmulatorConfig:
    """A config with output/, input/ and temp/ under tmp_path, a free port and no step time."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "output_dir": tmp_path / "output",
        "input_dir": tmp_path / "input",
        "temp_dir": tmp_path / "temp",
        "step_time_s": 0.0,
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@asynccontextmanager
async def running_emulator(tmp_path: Path, **overrides: Any) -> AsyncIterator[Emulator]:
    """Start an emulator on a free port for the `async with` block (overrides: EmulatorConfig fields)."""
    async with start_emulator(emulator_config(tmp_path, **overrides)) as emu:
        yield emu


def image_workflow(color: int = 0, prefix: str = "test", size: int = 64) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, plus a PreviewImage (the transcripts' graph)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def text_to_image_workflow(
    seed: int = 1,
    steps: int = 4,
    text: str = "a photo of a cat",
    ckpt_name: str = "v1-5-pruned-emaonly.safetensors",
    size: int = 64,
    prefix: str = "t2i",
) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph (simulated models)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }
