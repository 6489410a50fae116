"""Node definitions (GET /object_info), from ComfyUI 0.3.64's own, with this server's lists.

The packaged data/object_info.json.gz is a copy of the captured real object_info. Model
combos (ckpt_name, lora_name, ...) are replaced by the configured model lists and LoadImage's
list by the files in the input directory, the way ComfyUI rebuilds them on every request.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from comfyrun.comfy.emulator.scans import FolderScans
from comfyrun.comfy.validation import NodeDefs

#: input name -> models folder whose files fill its combo list.
MODEL_INPUTS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "unet_name": "diffusion_models",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
}
#: per-node exceptions to MODEL_INPUTS.
NODE_MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
}
#: combo entries that are not files and survive the substitution (VAELoader's built-ins).
BUILTIN_CHOICES = {"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_INPUT_NODES = ("LoadImage", "LoadImageMask", "LoadImageOutput")


@cache
def _packaged() -> str:
    ref = resources.files("comfyrun.comfy.emulator").joinpath("data/object_info.json.gz")
    return gzip.decompress(ref.read_bytes()).decode("utf-8")


@cache
def _extra() -> str:
    ref = resources.files("comfyrun.comfy.emulator").joinpath("data/extra_object_info.json")
    return ref.read_text(encoding="utf-8")


def load_base() -> NodeDefs:
    """A fresh copy of the packaged definitions, plus the audio nodes the captured instance
    lacked only because torchaudio was missing there (data/extra_object_info.json)."""
    data: NodeDefs = json.loads(_packaged())
    for name, definition in json.loads(_extra()).items():
        data.setdefault(name, definition)
    return data


def input_files(input_dir: Path, scans: FolderScans) -> list[str]:
    """Image files directly in the input directory, sorted (LoadImage's combo), as `scans`
    lists it (kept while the directory is unchanged)."""
    names = scans.files(input_dir)
    return sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)


def _is_model_list(spec: Any) -> bool:
    return isinstance(spec, list) and len(spec) >= 1 and isinstance(spec[0], list)


def build(base: NodeDefs, models: dict[str, list[str]], images: list[str]) -> NodeDefs:
    """Definitions as this server answers them now: `models`, the model lists; `images`, the
    input folder's (`input_files`)."""
    return {name: _filled(name, node, models.get, lambda: images) for name, node in base.items()}


def prompt_classes(prompt: Any) -> set[str]:
    """The class names of `prompt`'s nodes; none where it is of another shape (validation
    fails such a prompt where ComfyUI does, before it reads a definition)."""
    classes: set[str] = set()
    for node in prompt.values() if isinstance(prompt, dict) else ():
        name = node.get("class_type") if isinstance(node, dict) else None
        if isinstance(name, str):
            classes.add(name)
    return classes


def defs_of(
    base: NodeDefs,
    classes: Iterable[str],
    model_list: Callable[[str], list[str] | None],
    images: Callable[[], list[str]],
) -> NodeDefs:
    """The definitions `build` makes of just `classes` (those `base` has), each with only the
    lists its own inputs name, read when it names them (`model_list`: a folder's, or None where
    there is no such folder; `images`: the input folder's). ComfyUI validates a prompt with
    `INPUT_TYPES()` of its nodes alone, so a prompt of nodes without model or image inputs
    reads no folder at all. Callers must not modify the result."""
    return {name: _filled(name, base[name], model_list, images) for name in classes if name in base}


def _filled(
    name: str,
    node: Any,
    model_list: Callable[[str], list[str] | None],
    images: Callable[[], list[str]],
) -> Any:
    """`node` (definition of `name`) with its model and image combos filled; `node` itself
    where it has none."""
    filled: Any = None
    for category in ("required", "optional"):
        specs = node.get("input", {}).get(category, {})
        for input_name, spec in specs.items():
            if not _is_model_list(spec):
                continue
            if name in IMAGE_INPUT_NODES and input_name == "image":
                choices = list(images())
            else:
                folder = NODE_MODEL_INPUTS.get((name, input_name), MODEL_INPUTS.get(input_name))
                models = model_list(folder) if folder is not None else None
                if models is None:
                    continue
                extra = [c for c in spec[0] if isinstance(c, str) and c in BUILTIN_CHOICES]
                choices = list(models) + extra
            if filled is None:
                filled = copy.deepcopy(node)
            filled["input"][category][input_name][0] = choices
    return node if filled is None else filled
