"""What every emulated node shares: the context it runs in, its result, its errors."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image


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

    def model_path(self, folder: str, name: str) -> Path | None:
        """The file behind a model name (the models folder, then the extra model paths)."""

    def load_model(self, folder: str, name: str) -> None:
        """Spend the simulated load time unless this model is still in memory."""


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


NodeFn = Callable[..., NodeResult]


def hidden_metadata(ctx: NodeContext) -> dict[str, Any]:
    meta: dict[str, Any] = {"prompt": ctx.prompt}
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        meta[key] = value
    return meta


def annotated_path(name: str, input_dir: Path, output_dir: Path, temp_dir: Path) -> Path:
    """Where "sub/name.png", "name.png [output]" and friends point (ComfyUI's annotated names)."""
    for suffix, base in ((" [output]", output_dir), (" [input]", input_dir), (" [temp]", temp_dir)):
        if name.endswith(suffix.strip()):
            return base / name[: -len(suffix)]
    return input_dir / name


def resolve_input(ctx: NodeContext, name: str) -> Path:
    return annotated_path(name, ctx.input_dir, ctx.output_dir, ctx.temp_dir)


def annotated_exists(input_dir: Path, output_dir: Path, temp_dir: Path, name: str) -> bool:
    return annotated_path(name, input_dir, output_dir, temp_dir).is_file()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        digest.update(path.read_bytes())
    except OSError:
        return ""
    return digest.hexdigest()


def temp_prefix(ctx: NodeContext) -> str:
    """PreviewImage's "ComfyUI_temp_xxxxx" prefix, fixed per node id for the server's life."""
    state = ctx.node_state()
    if "prefix_append" not in state:
        state["prefix_append"] = "_temp_" + "".join(
            random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5)
        )
    return "ComfyUI" + str(state["prefix_append"])
