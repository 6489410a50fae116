"""The node implementations the emulator runs: one table, `NODES`, from class type to function.

Each node is a function `(ctx, **inputs) -> NodeResult`. Image nodes compute real pixels, the
model nodes are simulated (see `model`). Any class type in object_info without an entry here
validates like ComfyUI but fails at run time with a clear execution_error.
"""

from comfyrun.comfy.emulator.nodes import image, media, model
from comfyrun.comfy.emulator.nodes.base import (
    EmulatedError,
    NodeContext,
    NodeFn,
    NodeResult,
    NotImplementedNode,
    annotated_exists,
    file_hash,
)

NODES: dict[str, NodeFn] = {**image.NODES, **media.NODES, **model.NODES}

__all__ = [
    "NODES",
    "EmulatedError",
    "NodeContext",
    "NodeFn",
    "NodeResult",
    "NotImplementedNode",
    "annotated_exists",
    "file_hash",
]
