"""ComfyUI websocket frames as frozen message objects; no I/O.

Text frames are JSON `{"type": ..., "data": {...}}` and become one of the dataclasses below
(`parse_text`); the same event payloads appear in history as `status.messages` pairs
(`parse_event`). Binary frames start with a big-endian u32 event type (`parse_binary`):

    1  PREVIEW_IMAGE                u32 format (1=JPEG, 2=PNG), image bytes; carries no prompt_id
    3  TEXT                         u32 node_id length, node_id, UTF-8 text; broadcast to everyone
    4  PREVIEW_IMAGE_WITH_METADATA  u32 JSON length, JSON metadata (has prompt_id), image bytes

Every message has a `prompt_id` attribute, None when the frame does not say which prompt it
belongs to. Unknown event types parse to `Unknown` / `UnknownBinary`, never to an error: ComfyUI
and its custom nodes add events freely. Only a frame that is not valid JSON, or a known event
with a payload of the wrong shape, raises `ComfyProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfyrun import jsontext
from comfyrun.comfy.errors import ComfyProtocolError

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Status:
    """Broadcast queue status; `sid` only in the greeting sent on connect."""

    queue_remaining: int | None
    sid: str | None = None
    prompt_id: None = None


@dataclass(frozen=True, slots=True)
class FeatureFlags:
    flags: JSON
    prompt_id: None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    prompt_id: str
    nodes: tuple[str, ...]
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Executing:
    """A node starts; `node` None means the prompt is finished (always the last message).

    The legacy form sent on reconnect during a run has no prompt_id.
    """

    node: str | None
    prompt_id: str | None
    display_node: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """A step of a long node (a sampler): `value` of `max`."""

    prompt_id: str | None
    node: str | None
    value: float
    max: float


@dataclass(frozen=True, slots=True)
class NodeProgress:
    node_id: str
    value: float
    max: float
    state: str  # "pending" | "running" | "finished" | "error"
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressState:
    """The whole per-node progress map of a prompt (each one replaces the last)."""

    prompt_id: str | None
    nodes: dict[str, NodeProgress] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Executed:
    """An output node finished; `output` is its UI output (e.g. `{"images": [...]}`)."""

    prompt_id: str
    node: str
    output: JSON = field(hash=False)
    display_node: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionError:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    current_inputs: JSON = field(default_factory=dict, hash=False)
    executed: tuple[str, ...] = ()
    timestamp: int | None = None
    current_outputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: tuple[str, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    """A text event this module does not model (custom nodes send their own)."""

    type: str
    data: Any = field(hash=False)
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class PreviewImage:
    """A sampler preview without metadata; which prompt it belongs to is not said."""

    format: str  # "JPEG" | "PNG"
    image: bytes = field(repr=False)
    prompt_id: None = None

    @property
    def content_type(self) -> str:
        return "image/png" if self.format == "PNG" else "image/jpeg"


@dataclass(frozen=True, slots=True)
class PreviewImageWithMetadata:
    metadata: JSON = field(hash=False)
    image: bytes = field(repr=False)
    prompt_id: str | None = None
    node_id: str | None = None
    image_type: str | None = None

    @property
    def content_type(self) -> str:
        return self.image_type or "image/jpeg"


@dataclass(frozen=True, slots=True)
class Text:
    """Text a node shows in the UI; broadcast to every client, so it carries no prompt_id."""

    node_id: str
    text: str
    prompt_id: None = None


@dataclass(frozen=True, slots=True)
class UnknownBinary:
    event_type: int
    payload: bytes = field(repr=False)
    prompt_id: None = None


TextMessage = (
    Status
    | FeatureFlags
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Unknown
)
BinaryMessage = PreviewImage | PreviewImageWithMetadata | Text | UnknownBinary
Message = TextMessage | BinaryMessage

#: Events that end a prompt's execution (each is followed by `executing` node=None).
TERMINAL_EVENTS = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {1: "JPEG", 2: "PNG"}


def parse_text(frame: str | bytes) -> TextMessage:
    """Parse one websocket text frame."""
    try:
        obj = jsontext.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ComfyProtocolError(f"websocket text frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ComfyProtocolError("websocket text frame has no string 'type'")
    return parse_event(obj["type"], obj.get("data"))


def parse_event(event_type: str, data: Any) -> TextMessage:
    """Parse one event payload: a websocket frame's `data`, or a history `messages` pair."""
    parser = _PARSERS.get(event_type)
    if parser is None:
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        return Unknown(event_type, data, _opt_str(prompt_id))
    if not isinstance(data, dict):
        raise ComfyProtocolError(f"'{event_type}' event data is not an object")
    try:
        return parser(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ComfyProtocolError(f"malformed '{event_type}' event: {exc!r}") from exc


def parse_binary(frame: bytes) -> BinaryMessage:
    """Parse one websocket binary frame."""
    if len(frame) < 4:
        raise ComfyProtocolError("binary frame shorter than its 4-byte event type")
    (event_type,) = struct.unpack_from(">I", frame, 0)
    body = frame[4:]
    if event_type == PREVIEW_IMAGE:
        if len(body) < 4:
            raise ComfyProtocolError("preview frame without an image format")
        (fmt,) = struct.unpack_from(">I", body, 0)
        return PreviewImage(_IMAGE_FORMATS.get(fmt, "JPEG"), bytes(body[4:]))
    if event_type == PREVIEW_IMAGE_WITH_METADATA:
        meta = _json_prefixed(body, "preview metadata")
        metadata, image = meta
        return PreviewImageWithMetadata(
            metadata=metadata,
            image=image,
            prompt_id=_opt_str(metadata.get("prompt_id")),
            node_id=_opt_str(metadata.get("node_id")),
            image_type=_opt_str(metadata.get("image_type")),
        )
    if event_type == TEXT:
        node_id, text = _split_prefixed(body, "text node_id")
        try:
            return Text(node_id.decode(), text.decode())
        except UnicodeDecodeError as exc:
            raise ComfyProtocolError("text frame is not UTF-8") from exc
    return UnknownBinary(event_type, bytes(body))


def _split_prefixed(body: bytes, what: str) -> tuple[bytes, bytes]:
    if len(body) < 4:
        raise ComfyProtocolError(f"{what}: missing length")
    (length,) = struct.unpack_from(">I", body, 0)
    if len(body) < 4 + length:
        raise ComfyProtocolError(f"{what}: length {length} past the end of the frame")
    return bytes(body[4 : 4 + length]), bytes(body[4 + length :])


def _json_prefixed(body: bytes, what: str) -> tuple[JSON, bytes]:
    raw, rest = _split_prefixed(body, what)
    try:
        obj = jsontext.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ComfyProtocolError(f"{what} is not JSON") from exc
    if not isinstance(obj, dict):
        raise ComfyProtocolError(f"{what} is not an object")
    return obj, rest


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list of node ids, got {type(value).__name__}")
    return tuple(str(v) for v in value)


def _traceback(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _timestamp(data: JSON) -> int | None:
    value = data.get("timestamp")
    return int(value) if value is not None else None


def _status(data: JSON) -> Status:
    status = data.get("status") or {}
    remaining = (status.get("exec_info") or {}).get("queue_remaining")
    return Status(
        queue_remaining=int(remaining) if remaining is not None else None,
        sid=_opt_str(data.get("sid")),
    )


def _executing(data: JSON) -> Executing:
    return Executing(
        node=_opt_str(data.get("node")),
        prompt_id=_opt_str(data.get("prompt_id")),
        display_node=_opt_str(data.get("display_node")),
    )


def _progress(data: JSON) -> Progress:
    return Progress(
        prompt_id=_opt_str(data.get("prompt_id")),
        node=_opt_str(data.get("node")),
        value=float(data["value"]),
        max=float(data["max"]),
    )


def _progress_state(data: JSON) -> ProgressState:
    nodes: dict[str, NodeProgress] = {}
    for key, node in (data.get("nodes") or {}).items():
        nodes[str(key)] = NodeProgress(
            node_id=str(node.get("node_id", key)),
            value=float(node.get("value", 0.0)),
            max=float(node.get("max", 1.0)),
            state=str(node.get("state", "running")),
            display_node_id=_opt_str(node.get("display_node_id")),
            parent_node_id=_opt_str(node.get("parent_node_id")),
            real_node_id=_opt_str(node.get("real_node_id")),
        )
    return ProgressState(prompt_id=_opt_str(data.get("prompt_id")), nodes=nodes)


def _executed(data: JSON) -> Executed:
    output = data.get("output") or {}
    if not isinstance(output, dict):
        raise TypeError("'output' is not an object")
    return Executed(
        prompt_id=str(data["prompt_id"]),
        node=str(data["node"]),
        output=output,
        display_node=_opt_str(data.get("display_node")),
    )


def _execution_error(data: JSON) -> ExecutionError:
    inputs = data.get("current_inputs") or {}
    return ExecutionError(
        prompt_id=str(data["prompt_id"]),
        node_id=_opt_str(data.get("node_id")),
        node_type=_opt_str(data.get("node_type")),
        exception_type=str(data.get("exception_type") or ""),
        exception_message=str(data.get("exception_message") or ""),
        traceback=_traceback(data.get("traceback")),
        current_inputs=inputs if isinstance(inputs, dict) else {},
        executed=_ids(data.get("executed")),
        timestamp=_timestamp(data),
        current_outputs=_ids(data.get("current_outputs")),
    )


def _execution_interrupted(data: JSON) -> ExecutionInterrupted:
    return ExecutionInterrupted(
        prompt_id=str(data["prompt_id"]),
        node_id=_opt_str(data.get("node_id")),
        node_type=_opt_str(data.get("node_type")),
        executed=_ids(data.get("executed")),
        timestamp=_timestamp(data),
    )


_PARSERS: dict[str, Callable[[JSON], TextMessage]] = {
    "status": _status,
    "feature_flags": lambda d: FeatureFlags(dict(d)),
    "execution_start": lambda d: ExecutionStart(str(d["prompt_id"]), _timestamp(d)),
    "execution_cached": lambda d: ExecutionCached(
        str(d["prompt_id"]), _ids(d.get("nodes")), _timestamp(d)
    ),
    "executing": _executing,
    "progress": _progress,
    "progress_state": _progress_state,
    "executed": _executed,
    "execution_success": lambda d: ExecutionSuccess(str(d["prompt_id"]), _timestamp(d)),
    "execution_error": _execution_error,
    "execution_interrupted": _execution_interrupted,
}


__all__ = [
    "PREVIEW_IMAGE",
    "PREVIEW_IMAGE_WITH_METADATA",
    "TERMINAL_EVENTS",
    "TEXT",
    "BinaryMessage",
    "Executed",
    "Executing",
    "ExecutionCached",
    "ExecutionError",
    "ExecutionInterrupted",
    "ExecutionStart",
    "ExecutionSuccess",
    "FeatureFlags",
    "Message",
    "NodeProgress",
    "PreviewImage",
    "PreviewImageWithMetadata",
    "Progress",
    "ProgressState",
    "Status",
    "Text",
    "TextMessage",
    "Unknown",
    "UnknownBinary",
    "parse_binary",
    "parse_event",
    "parse_text",
]
