"""Store events → ComfyUI websocket messages, in ComfyUI's order (no sockets)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

from tests.support.emulator import assert_same_shape

from comfyrun.api.compat.comfy_events import ComfyMessages, Message
from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType
from comfyrun.store.base import JobEvent
from comfyrun.store.codec import output_to_dict

PID = "d00e9452-ea96-4161-a1d5-b77b22e01498"


def ev(kind: str, **data: Any) -> JobEvent:
    return JobEvent(1, PID, kind, data, 1795387637.843)


def kinds(messages: list[Message]) -> list[str]:
    return [m["type"] if isinstance(m, dict) else "<binary>" for m in messages]


def image(node: str = "3") -> dict[str, Any]:
    out = Output(
        node_id=node,
        name="a.png",
        type=OutputType.IMAGE,
        content_type="image/png",
        storage_key=f"{PID}/{node}/a.png",
        meta={"key": "images"},
    )
    return output_to_dict(out)


def run(events: list[tuple[JobEvent, Job | None]], **kw: Any) -> list[Message]:
    translator = ComfyMessages(PID, **kw)
    out: list[Message] = []
    for event, job in events:
        out += translator.feed(event, job)
    return out


def test_success_sequence() -> None:
    job = Job(id=PID, workflow={}, status=JobStatus.SUCCEEDED)
    messages = run(
        [
            (ev("status", status="queued"), None),
            (ev("status", status="running"), None),
            (ev("progress", current_node="5", value=0.1), None),
            (ev("progress", current_node="5", step=1, steps=4), None),
            (ev("progress", current_node="6"), None),
            (ev("output", **image()), None),
            (ev("status", status="succeeded"), job),
            (ev("status", status="succeeded"), job),  # nothing after the end
        ]
    )
    assert kinds(messages) == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress",
        "progress_state",  # node 5 finished
        "progress_state",
        "executing",
        "progress_state",  # node 6 finished
        "executed",
        "execution_success",
        "executing",
    ]
    last = messages[-1]
    assert isinstance(last, dict) and last["data"] == {"node": None, "prompt_id": PID}
    executed = messages[-3]
    assert isinstance(executed, dict)
    assert executed["data"]["output"] == {
        "images": [{"filename": "a.png", "subfolder": f"{PID}/3", "type": "output"}]
    }


def test_messages_have_the_shapes_a_real_comfyui_sent(shared_dir: Path) -> None:
    real = json.loads((shared_dir / "comfy-protocol" / "ws_runtime_error.json").read_text())
    by_type: dict[str, dict[str, Any]] = {}
    for record in real["ws_messages"]:
        if "type" in record:
            by_type.setdefault(record["type"], record["data"])
    error = JobError(
        code="node_execution_error",
        message="boom",
        node_id="1",
        class_type="CheckpointLoaderSimple",
        details={"exception_type": "SafetensorError"},
    )
    job = Job(id=PID, workflow={}, status=JobStatus.FAILED, error=error)
    messages = run(
        [
            (ev("status", status="running"), None),
            (ev("progress", current_node="5"), None),
            (ev("status", status="failed"), job),
        ]
    )
    seen: dict[str, dict[str, Any]] = {}
    for m in messages:  # the first of each type, as for the real ones
        if isinstance(m, dict):
            seen.setdefault(m["type"], m["data"])
    assert kinds(messages)[-2:] == ["execution_error", "executing"]
    for kind in ("execution_start", "execution_cached", "executing", "execution_error"):
        assert_same_shape(seen[kind], by_type[kind], maps=("$.current_inputs",))
    last = messages[-1]
    assert isinstance(last, dict)
    assert list(last["data"]) == list(real["ws_messages"][-1]["data"])  # executing, node null
    assert seen["execution_error"]["node_id"] == "1"
    assert seen["execution_error"]["exception_type"] == "SafetensorError"
    state = next(m for m in messages if isinstance(m, dict) and m["type"] == "progress_state")
    assert_same_shape(state["data"], by_type["progress_state"], maps=("$.nodes",))


def test_cancel_before_start_and_during_run() -> None:
    canceled = Job(id=PID, workflow={}, status=JobStatus.CANCELED)
    early = run(
        [(ev("status", status="queued"), None), (ev("status", status="canceled"), canceled)]
    )
    assert kinds(early) == ["execution_interrupted", "executing"]
    late = run(
        [
            (ev("status", status="running"), None),
            (ev("status", status="canceling"), None),
            (ev("status", status="canceled"), canceled),
        ]
    )
    assert kinds(late) == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
        "executing",
    ]


def test_previews_are_binary_frames() -> None:
    jpeg = b"\xff\xd8fake"
    data = base64.b64encode(jpeg).decode()
    (legacy,) = run(
        [(ev("preview", node_id="5", content_type="image/jpeg", data_base64=data), None)]
    )
    assert isinstance(legacy, bytes)
    assert struct.unpack(">II", legacy[:8]) == (1, 1) and legacy[8:] == jpeg
    (framed,) = run(
        [(ev("preview", node_id="5", content_type="image/png", data_base64=data), None)],
        preview_metadata=True,
    )
    assert isinstance(framed, bytes)
    kind, length = struct.unpack(">II", framed[:8])
    meta = json.loads(framed[8 : 8 + length])
    assert kind == 4 and meta["prompt_id"] == PID and meta["image_type"] == "image/png"
    assert framed[8 + length :] == jpeg
    assert run([(ev("preview", node_id="5", data_base64="not base64!"), None)]) == []
