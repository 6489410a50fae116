"""Helpers to replay the recorded ComfyUI protocol transcripts (../shared/comfy-protocol)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from comfyrun.comfy.messages import Message, parse_binary, parse_text

JSON = dict[str, Any]

#: Transcripts with one prompt: (file, key path to ws messages, key path to the history body).
SINGLE_PROMPT_RUNS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("ws_success_run.json", ("ws_messages",), ("history", "body")),
    ("ws_success_cached_rerun.json", ("ws_messages",), ("history", "body")),
    ("ws_success_partial_cache.json", ("ws_messages",), ("history", "body")),
    ("ws_loadimage_scale_save.json", ("ws_messages",), ("history", "body")),
    ("ws_runtime_error.json", ("ws_messages",), ("history", "body")),
    ("post_prompt_extra_data_and_prompt_id.json", ("ws_messages",), ("history", "body")),
    (
        "ws_sampler_progress_previews_interrupt.json",
        ("interrupt_mid_ksampler", "ws_messages"),
        ("interrupt_mid_ksampler", "history", "body"),
    ),
]


def load(shared_dir: Path, name: str) -> Any:
    return json.loads((shared_dir / "comfy-protocol" / name).read_text())


def dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def binary_frame(record: JSON) -> bytes:
    """Rebuild a binary frame from its transcript description (the bytes were not stored)."""
    event = int(record["event_type"])
    if event == 1:
        fmt = 2 if record.get("image_format") == "PNG" else 1
        size = int(record.get("image_bytes", record["len"] - 8))
        image = bytes.fromhex(record.get("image_magic", "ffd8ffe0")).ljust(size, b"\0")
        return struct.pack(">II", 1, fmt) + image
    if event == 4:
        meta = json.dumps(record["metadata"]).encode()
        image = b"\xff\xd8\xff\xe0".ljust(int(record["len"]) - 8 - len(meta), b"\0")
        return struct.pack(">II", 4, len(meta)) + meta + image
    if event == 3:
        node = str(record["node_id"]).encode()
        return struct.pack(">II", 3, len(node)) + node + str(record["text"]).encode()
    raise ValueError(f"no rebuild for binary event {event}")


def frames(records: list[JSON]) -> Iterator[str | bytes]:
    """The websocket frames of a transcript, as the server sent them."""
    for record in records:
        if record.get("binary"):
            yield binary_frame(record)
        else:
            yield json.dumps({"type": record["type"], "data": record["data"]})


def messages(records: list[JSON]) -> list[Message]:
    parsed: list[Message] = []
    for frame in frames(records):
        parsed.append(parse_binary(frame) if isinstance(frame, bytes) else parse_text(frame))
    return parsed


def all_ws_records(obj: Any) -> Iterator[JSON]:
    """Every recorded websocket message anywhere in a transcript."""
    if isinstance(obj, dict):
        if "t_ms" in obj and ("type" in obj or obj.get("binary")):
            yield obj
            return
        for value in obj.values():
            yield from all_ws_records(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from all_ws_records(value)
