"""Frames → message objects, against every frame recorded from real ComfyUI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from tests.conftest import SHARED
from tests.support.comfy import all_ws_records, binary_frame, load

from comfyrun.comfy import messages as m
from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.socket import ws_url

TRANSCRIPTS = sorted(p.name for p in (SHARED / "comfy-protocol").glob("*.json"))

KNOWN = {
    "status": m.Status,
    "feature_flags": m.FeatureFlags,
    "execution_start": m.ExecutionStart,
    "execution_cached": m.ExecutionCached,
    "executing": m.Executing,
    "progress": m.Progress,
    "progress_state": m.ProgressState,
    "executed": m.Executed,
    "execution_success": m.ExecutionSuccess,
    "execution_error": m.ExecutionError,
    "execution_interrupted": m.ExecutionInterrupted,
}


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_recorded_text_frame_parses_to_its_type(shared_dir: Path, name: str) -> None:
    for record in all_ws_records(load(shared_dir, name)):
        if record.get("binary"):
            continue
        message = m.parse_text(json.dumps({"type": record["type"], "data": record["data"]}))
        assert isinstance(message, KNOWN[record["type"]]), record
        data = record["data"]
        if "prompt_id" in data:
            assert message.prompt_id == data["prompt_id"]


def test_recorded_binary_frames_parse(shared_dir: Path) -> None:
    records = [
        r
        for r in all_ws_records(load(shared_dir, "ws_sampler_progress_previews_interrupt.json"))
        if r.get("binary")
    ]
    kinds = {r["event_type"] for r in records}
    assert kinds == {1, 3, 4}
    for record in records:
        message = m.parse_binary(binary_frame(record))
        if record["event_type"] == 4:
            assert isinstance(message, m.PreviewImageWithMetadata)
            assert message.prompt_id == record["metadata"]["prompt_id"]
            assert message.node_id == record["metadata"]["node_id"]
            assert message.content_type == record["metadata"]["image_type"]
            assert message.image.startswith(b"\xff\xd8")
        elif record["event_type"] == 1:
            assert isinstance(message, m.PreviewImage)
            assert message.format == "JPEG"
            assert message.prompt_id is None
            assert len(message.image) == record["image_bytes"]
        else:
            assert message == m.Text(node_id="2", text="width: 48, height: 32\n batch size: 2")


def test_status_greeting_carries_sid() -> None:
    frame = '{"type":"status","data":{"status":{"exec_info":{"queue_remaining":3}},"sid":"abc"}}'
    assert m.parse_text(frame) == m.Status(queue_remaining=3, sid="abc")


def test_legacy_executing_has_no_prompt_id() -> None:
    message = m.parse_text('{"type":"executing","data":{"node":"2"}}')
    assert message == m.Executing(node="2", prompt_id=None)


def test_executing_null_marks_the_end() -> None:
    message = m.parse_text('{"type":"executing","data":{"node":null,"prompt_id":"p"}}')
    assert isinstance(message, m.Executing)
    assert message.node is None and message.prompt_id == "p"


def test_execution_error_keeps_every_field(shared_dir: Path) -> None:
    record = next(
        r
        for r in load(shared_dir, "ws_runtime_error.json")["ws_messages"]
        if r["type"] == "execution_error"
    )
    message = m.parse_event("execution_error", record["data"])
    assert isinstance(message, m.ExecutionError)
    assert message.node_id == "1"
    assert message.node_type == "CheckpointLoaderSimple"
    assert message.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert "header too large" in message.exception_message
    assert message.executed == ("6", "5")
    assert len(message.traceback) == len(record["data"]["traceback"])
    assert message.current_inputs == record["data"]["current_inputs"]


def test_progress_state_maps_nodes() -> None:
    data = {
        "prompt_id": "p",
        "nodes": {"5": {"value": 2, "max": 6, "state": "running", "node_id": "5"}},
    }
    message = m.parse_event("progress_state", data)
    assert isinstance(message, m.ProgressState)
    assert message.nodes["5"] == m.NodeProgress("5", 2.0, 6.0, "running")


def test_unknown_event_is_kept_not_rejected() -> None:
    message = m.parse_text('{"type":"crystools.monitor","data":{"cpu":3,"prompt_id":"x"}}')
    assert message == m.Unknown("crystools.monitor", {"cpu": 3, "prompt_id": "x"}, "x")


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"data": {}}',
        '{"type": "executed", "data": {"node": "1"}}',
        '{"type": "progress", "data": {"value": "x", "max": 1}}',
        '{"type": "execution_start", "data": []}',
    ],
)
def test_malformed_text_frames_raise_protocol_error(frame: str) -> None:
    with pytest.raises(ComfyProtocolError):
        m.parse_text(frame)


def test_png_preview_format() -> None:
    message = m.parse_binary(struct.pack(">II", 1, 2) + b"\x89PNG")
    assert message == m.PreviewImage("PNG", b"\x89PNG")
    assert isinstance(message, m.PreviewImage) and message.content_type == "image/png"


def test_unknown_binary_event_is_kept() -> None:
    assert m.parse_binary(struct.pack(">I", 9) + b"xy") == m.UnknownBinary(9, b"xy")


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00",
        struct.pack(">I", 1),
        struct.pack(">II", 4, 50) + b"{}",
        struct.pack(">II", 4, 2) + b"[]",
        struct.pack(">II", 4, 3) + b"{{{",
        struct.pack(">II", 3, 9) + b"1",
        struct.pack(">II", 3, 1) + b"1\xff\xfe",
    ],
)
def test_malformed_binary_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ComfyProtocolError):
        m.parse_binary(frame)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8188", "ws://127.0.0.1:8188/ws"),
        ("https://gpu.example/comfy/", "wss://gpu.example/comfy/ws"),
    ],
)
def test_ws_url(base: str, url: str) -> None:
    assert ws_url(base) == url
