"""A job's store events → the websocket messages ComfyUI sends the prompt's client.

Pure and fed one event at a time (`ComfyMessages.feed`). Text messages are dicts
({"type", "data"}); previews are binary frames (bytes). The order follows what a real ComfyUI
sends (see ../shared/comfy-protocol/notes.md): execution_start, execution_cached, then per node
executing / progress_state / progress, executed for each output node, then execution_success,
execution_error or execution_interrupted, and last `executing` with node null. Outputs are
committed by comfyrun after the prompt ran, so their `executed` messages come just before the
end. The `status` broadcasts (queue size) are the websocket handler's business.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from comfyrun.api.compat.comfy import execution_error, history_outputs, interrupted, ms
from comfyrun.core.job import JSON, Job, JobStatus, Output
from comfyrun.store.base import JobEvent
from comfyrun.store.codec import output_from_dict

#: Binary frame event types (ComfyUI's BinaryEventTypes).
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {"image/jpeg": 1, "image/png": 2}

Message = dict[str, Any] | bytes


def text(kind: str, data: JSON) -> dict[str, Any]:
    return {"type": kind, "data": data}


def preview_frame(
    prompt_id: str, node_id: str | None, content_type: str, image: bytes, *, metadata: bool
) -> bytes:
    """A binary preview frame: type 4 (with metadata JSON) for clients that negotiated
    `supports_preview_metadata`, else the legacy type 1 (format code + image)."""
    if metadata:
        meta = json.dumps(
            {
                "node_id": node_id,
                "prompt_id": prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": content_type,
            }
        ).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
    return struct.pack(">II", PREVIEW_IMAGE, _IMAGE_FORMATS.get(content_type, 1)) + image


class ComfyMessages:
    """Translates one job's events for its ComfyUI client."""

    def __init__(self, prompt_id: str, *, preview_metadata: bool = False) -> None:
        self.prompt_id = prompt_id
        self.preview_metadata = preview_metadata
        self.started = False
        self.finished = False
        self._executing: str | None = None
        self._outputs: list[Output] = []

    def feed(self, event: JobEvent, job: Job | None = None) -> list[Message]:
        """Messages for `event`; `job` (the record after the event) is needed for a terminal
        status, to describe an error."""
        if self.finished:
            return []
        now = ms(event.created_at)
        if event.kind == "status":
            return self._status(str(event.data.get("status")), job, now)
        if event.kind == "progress":
            return self._start(now) + self._progress(event.data)
        if event.kind == "output":
            self._outputs.append(output_from_dict(event.data))
            return []
        if event.kind == "preview":
            return self._preview(event.data)
        return []

    def settle_outputs(self, outputs: tuple[Output, ...]) -> None:
        """The job's outputs, all of them, as its settled record holds them (instead of the
        "output" events fed so far)."""
        self._outputs = list(outputs)

    def _start(self, now: int | None) -> list[Message]:
        if self.started:
            return []
        self.started = True
        pid = self.prompt_id
        return [
            text("execution_start", {"prompt_id": pid, "timestamp": now}),
            text("execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": now}),
        ]

    def _status(self, status: str, job: Job | None, now: int | None) -> list[Message]:
        if status in (JobStatus.QUEUED, JobStatus.CANCELING):
            return []
        if status == JobStatus.RUNNING:
            return self._start(now)
        # a terminal status
        self.finished = True
        pid = self.prompt_id
        out: list[Message] = []
        if status != JobStatus.CANCELED or self.started:
            out += self._start(now)
        out += self._node_done()
        for node_id, output in history_outputs(self._outputs).items():
            out.append(
                text(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": output, "prompt_id": pid},
                )
            )
        if status == JobStatus.SUCCEEDED:
            out.append(text("execution_success", {"prompt_id": pid, "timestamp": now}))
        elif job is not None and status == JobStatus.FAILED:
            out.append(text("execution_error", execution_error(job, now)))
        elif job is not None:
            out.append(text("execution_interrupted", interrupted(job, now)))
        else:
            out.append(text("execution_interrupted", {"prompt_id": pid, "timestamp": now}))
        out.append(text("executing", {"node": None, "prompt_id": pid}))
        return out

    def _node_done(self) -> list[Message]:
        if self._executing is None:
            return []
        node, self._executing = self._executing, None
        return [self._progress_state(node, 1, 1, "finished")]

    def _progress_state(self, node: str, value: float, top: float, state: str) -> Message:
        pid = self.prompt_id
        return text(
            "progress_state",
            {
                "prompt_id": pid,
                "nodes": {
                    node: {
                        "value": value,
                        "max": top,
                        "state": state,
                        "node_id": node,
                        "prompt_id": pid,
                        "display_node_id": node,
                        "parent_node_id": None,
                        "real_node_id": node,
                    }
                },
            },
        )

    def _progress(self, data: JSON) -> list[Message]:
        node = data.get("current_node")
        if not isinstance(node, str):
            return []
        out: list[Message] = []
        pid = self.prompt_id
        if node != self._executing:
            out += self._node_done()
            self._executing = node
            out.append(self._progress_state(node, 0, 1, "running"))
            out.append(text("executing", {"node": node, "display_node": node, "prompt_id": pid}))
        step, steps = data.get("step"), data.get("steps")
        if isinstance(step, int) and isinstance(steps, int) and steps > 0:
            out.append(self._progress_state(node, step, steps, "running"))
            out.append(
                text("progress", {"value": step, "max": steps, "prompt_id": pid, "node": node})
            )
        return out

    def _preview(self, data: JSON) -> list[Message]:
        raw = data.get("data_base64")
        if not isinstance(raw, str):
            return []
        try:
            image = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return []
        node = data.get("node_id")
        content_type = str(data.get("content_type") or "image/jpeg")
        frame = preview_frame(
            self.prompt_id,
            node if isinstance(node, str) else None,
            content_type,
            image,
            metadata=self.preview_metadata,
        )
        return [frame]


__all__ = [
    "PREVIEW_IMAGE",
    "PREVIEW_IMAGE_WITH_METADATA",
    "ComfyMessages",
    "Message",
    "preview_frame",
    "text",
]
