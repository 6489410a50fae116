"""Parsed messages back to frames: what a relay sends is what ComfyUI sent."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.comfy.messages import parse_binary, parse_event
from comfyrun.comfy.wire import from_json, preview_frame, to_frame, to_json


def captured(shared_dir: Path) -> Iterator[dict[str, Any]]:
    """Every text message of a prompt in the real ComfyUI transcripts."""

    def walk(value: Any) -> Iterator[dict[str, Any]]:
        if isinstance(value, dict):
            if isinstance(value.get("ws_messages"), list):
                yield from value["ws_messages"]
            for inner in value.values():
                yield from walk(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from walk(inner)

    for path in sorted((shared_dir / "comfy-protocol").glob("ws_*.json")):
        for message in walk(json.loads(path.read_text())):
            data = message.get("data")
            if not message.get("binary") and isinstance(data, dict) and "prompt_id" in data:
                yield message


def test_every_captured_prompt_message_comes_back_as_comfyui_sent_it(shared_dir: Path) -> None:
    messages = list(captured(shared_dir))
    kinds = {message["type"] for message in messages}
    assert {"execution_start", "progress", "progress_state", "execution_error"} <= kinds
    for message in messages:
        frame = to_frame(parse_event(message["type"], message["data"]))
        assert frame == {"type": message["type"], "data": message["data"]}


def test_the_prompt_id_is_replaced_everywhere() -> None:
    state = m.ProgressState(
        prompt_id="backend", nodes={"5": m.NodeProgress("5", 1.0, 4.0, "running")}
    )
    frame = to_frame(state, "public")
    assert isinstance(frame, dict)
    assert frame["data"]["prompt_id"] == "public"
    assert frame["data"]["nodes"]["5"]["prompt_id"] == "public"
    custom = to_frame(m.Unknown("my_event", {"prompt_id": "backend", "x": 1}), "public")
    assert custom == {"type": "my_event", "data": {"prompt_id": "public", "x": 1}}
    assert to_frame(m.Status(queue_remaining=1), "public") is None


def test_previews_keep_their_metadata_and_image() -> None:
    meta = {"node_id": "5", "prompt_id": "backend", "image_type": "image/jpeg"}
    frame = preview_frame(b"\xff\xd8jpeg", meta, metadata_frame=True)
    relayed = to_frame(parse_binary(frame), "public")
    assert isinstance(relayed, bytes)
    parsed = parse_binary(relayed)
    assert isinstance(parsed, m.PreviewImageWithMetadata)
    assert parsed.metadata == {**meta, "prompt_id": "public"}
    assert parsed.image == b"\xff\xd8jpeg"
    legacy = preview_frame(b"png", {"image_type": "image/png"}, metadata_frame=False)
    assert legacy == struct.pack(">II", 1, 2) + b"png"
    assert to_frame(parse_binary(legacy), "public") == legacy
    text = struct.pack(">II", 3, 1) + b"7" + b"hello"
    assert to_frame(parse_binary(text)) == text


def test_frames_travel_as_json() -> None:
    for frame in ({"type": "executing", "data": {"node": None}}, b"\x00\x00\x00\x04abc"):
        assert from_json(json.loads(json.dumps(to_json(frame)))) == frame
