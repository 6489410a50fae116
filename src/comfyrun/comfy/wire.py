"""Parsed messages back to the websocket frames ComfyUI sends; no I/O.

The inverse of `comfyrun.comfy.messages`: `to_frame` gives the `{"type", "data"}` dict of a
text message, or the bytes of a binary one, optionally under another prompt id (a job server
relays a backend's messages under the prompt id its own client knows). `preview_frame` builds a
preview in either binary form, so a relay can hand each client the form it negotiated:

    1  PREVIEW_IMAGE                u32 format (1=JPEG, 2=PNG), image bytes
    4  PREVIEW_IMAGE_WITH_METADATA  u32 JSON length, JSON metadata, image bytes

`to_json` / `from_json` carry a frame through JSON (binary frames as base64).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from comfyrun.comfy import messages as m

JSON = dict[str, Any]
Frame = JSON | bytes

_FORMAT_CODES = {"image/jpeg": 1, "image/png": 2}


def to_frame(message: m.Message, prompt_id: str | None = None) -> Frame | None:
    """The frame a ComfyUI server sends for `message`, with `prompt_id` in place of the
    message's own when given. None for messages that are not a prompt's (status, flags)."""
    if isinstance(message, m.Status | m.FeatureFlags):
        return None
    pid = prompt_id if prompt_id is not None else message.prompt_id
    if isinstance(message, m.PreviewImageWithMetadata):
        meta = dict(message.metadata)
        if prompt_id is not None:
            meta["prompt_id"] = prompt_id
        return preview_frame(message.image, meta, metadata_frame=True)
    if isinstance(message, m.PreviewImage):
        meta = {"image_type": message.content_type}
        return preview_frame(message.image, meta, metadata_frame=False)
    if isinstance(message, m.Text):
        node = message.node_id.encode()
        return struct.pack(">II", m.TEXT, len(node)) + node + message.text.encode()
    if isinstance(message, m.UnknownBinary):
        return struct.pack(">I", message.event_type) + message.payload
    if isinstance(message, m.Unknown):
        data = message.data
        if prompt_id is not None and isinstance(data, dict) and "prompt_id" in data:
            data = {**data, "prompt_id": prompt_id}
        return {"type": message.type, "data": data}
    kind, data = _text(message, pid)
    return {"type": kind, "data": data}


def _text(message: m.TextMessage, pid: str | None) -> tuple[str, JSON]:
    match message:
        case m.ExecutionStart():
            return "execution_start", _stamped({"prompt_id": pid}, message.timestamp)
        case m.ExecutionCached():
            data = {"nodes": list(message.nodes), "prompt_id": pid}
            return "execution_cached", _stamped(data, message.timestamp)
        case m.Executing() if message.node is None:
            return "executing", {"node": None, "prompt_id": pid}
        case m.Executing():
            data = {"node": message.node, "display_node": message.display_node or message.node}
            return "executing", {**data, "prompt_id": pid}
        case m.Progress():
            step = {"value": _number(message.value), "max": _number(message.max)}
            return "progress", {**step, "prompt_id": pid, "node": message.node}
        case m.ProgressState():
            nodes = {key: _node_state(node, pid) for key, node in message.nodes.items()}
            return "progress_state", {"prompt_id": pid, "nodes": nodes}
        case m.Executed():
            data = {"node": message.node, "display_node": message.display_node or message.node}
            return "executed", {**data, "output": message.output, "prompt_id": pid}
        case m.ExecutionSuccess():
            return "execution_success", _stamped({"prompt_id": pid}, message.timestamp)
        case m.ExecutionError():
            error: JSON = {
                "prompt_id": pid,
                "node_id": message.node_id,
                "node_type": message.node_type,
                "executed": list(message.executed),
                "exception_message": message.exception_message,
                "exception_type": message.exception_type,
                "traceback": list(message.traceback),
                "current_inputs": message.current_inputs,
                "current_outputs": list(message.current_outputs),
            }
            return "execution_error", _stamped(error, message.timestamp)
        case m.ExecutionInterrupted():
            data = {
                "prompt_id": pid,
                "node_id": message.node_id,
                "node_type": message.node_type,
                "executed": list(message.executed),
            }
            return "execution_interrupted", _stamped(data, message.timestamp)
    raise TypeError(f"no frame for {type(message).__name__}")  # pragma: no cover


def _stamped(data: JSON, timestamp: int | None) -> JSON:
    return {**data, "timestamp": timestamp} if timestamp is not None else data


def _number(value: float) -> float | int:
    """ComfyUI's progress hook sends integers; parsing made them floats."""
    return int(value) if float(value).is_integer() else value


def _node_state(node: m.NodeProgress, pid: str | None) -> JSON:
    return {
        "value": node.value,
        "max": node.max,
        "state": node.state,
        "node_id": node.node_id,
        "prompt_id": pid,
        "display_node_id": node.display_node_id,
        "parent_node_id": node.parent_node_id,
        "real_node_id": node.real_node_id,
    }


def preview_frame(image: bytes, metadata: JSON, *, metadata_frame: bool) -> bytes:
    """A preview as event 4 (with `metadata` as its JSON) or, without `metadata_frame`, as the
    legacy event 1 (the format code from metadata's image_type, then the image)."""
    if metadata_frame:
        meta = json.dumps(metadata).encode()
        return struct.pack(">II", m.PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
    code = _FORMAT_CODES.get(str(metadata.get("image_type") or "image/jpeg"), 1)
    return struct.pack(">II", m.PREVIEW_IMAGE, code) + image


def to_json(frame: Frame) -> JSON:
    """A frame as JSON: text frames as they are, binary ones as {"binary": base64}."""
    if isinstance(frame, bytes):
        return {"binary": base64.b64encode(frame).decode("ascii")}
    return frame


def from_json(obj: JSON) -> Frame:
    raw = obj.get("binary")
    if isinstance(raw, str):
        return base64.b64decode(raw)
    return obj


__all__ = ["Frame", "from_json", "preview_frame", "to_frame", "to_json"]
