"""What one ComfyUI /ws client gets for one prompt: the relayed frames, adapted to the client.

Pure and fed in arrival order: `feed_frames` takes frames relayed by the worker
(dispatch.relay: from the in-process hub, or from "comfy" store events through `feed_event`),
and `feed_event` the job's other store events. Frames pass through as the backend sent them,
with three changes:

- the prompt's end (`executed`, execution_success / _error / _interrupted, and `executing` with
  node null) waits for the job's terminal status event: the outputs are committed with it, so
  `executed` can name comfyrun's stored files (as /history and /view do) instead of the
  backend's, and GET /history answers when the client asks;
- previews take the form the client negotiated: event 4 (with metadata) or the legacy event 1,
  which ComfyUI sends after its step's `progress` where event 4 comes before it.

`STATUS` marks where the socket sends a `status` with the fleet's queue size: before
`execution_start` and before the final `executing` (ComfyUI broadcasts one when its worker takes
the prompt and one when it is done). A job whose prompt's end never came through the relay (it
failed or was canceled in comfyrun, or was never run) gets its ending made up from the job, as
`ComfyMessages` does for jobs with no relayed frames at all.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Final

from comfyrun.api.compat.comfy import history_outputs
from comfyrun.api.compat.comfy_events import ComfyMessages, Message
from comfyrun.comfy.messages import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, parse_binary
from comfyrun.comfy.wire import from_json, preview_frame
from comfyrun.core.job import JSON, TERMINAL, Job, Output
from comfyrun.dispatch.relay import EVENT_KIND
from comfyrun.store.base import JobEvent
from comfyrun.store.codec import output_from_dict


class StatusSlot:
    """Where a `status` message (the fleet's queue size) goes."""

    def __repr__(self) -> str:
        return "STATUS"


STATUS: Final = StatusSlot()
Out = Message | StatusSlot


#: The frames of a prompt's end, held until the job is settled.
END_KINDS = frozenset({"executed", "execution_success", "execution_error", "execution_interrupted"})


class ComfyRelay:
    """One prompt's messages for one client."""

    def __init__(self, prompt_id: str, *, preview_metadata: bool = False) -> None:
        self.prompt_id = prompt_id
        self.preview_metadata = preview_metadata
        self.finished = False
        self._fallback = ComfyMessages(prompt_id, preview_metadata=preview_metadata)
        self._held: list[JSON] = []
        self._outputs: dict[int, Output] = {}
        self._legacy: list[bytes] = []
        #: The node the backend said it runs (its display node), as ComfyUI's last_node_id:
        #: what a client that reconnects mid-run is told (see comfy_socket).
        self.current_node: str | None = None

    def note_output(self, event: JobEvent) -> None:
        """An "output" event (counted once however often it is fed)."""
        if event.kind == "output" and event.id not in self._outputs:
            self._outputs[event.id] = output_from_dict(event.data)
            self._fallback.feed(event)

    def feed_event(self, event: JobEvent, job: Job | None = None) -> list[Out]:
        """A store event of the job; `job` is needed for a terminal status."""
        if self.finished:
            return []
        if event.kind == EVENT_KIND:
            frames = event.data.get("messages")
            return self.feed_frames(frames if isinstance(frames, list) else [])
        if event.kind == "output":
            self.note_output(event)
        elif event.kind == "status" and event.data.get("status") in TERMINAL:
            return self._end(event, job)
        return []  # progress and previews come through the relay

    def settle(self, job: Job) -> list[Out]:
        """The job as the run that settled it tells, in this process (dispatch.relay): the
        prompt ends as its terminal status event would end it, the outputs being the job's."""
        if self.finished or not job.terminal:
            return []
        self._outputs = dict(enumerate(job.outputs))
        self._fallback.settle_outputs(job.outputs)
        at = job.finished_at if job.finished_at is not None else time.time()
        return self._end(JobEvent(0, job.id, "status", {"status": job.status.value}, at), job)

    def feed_frames(self, frames: list[JSON]) -> list[Out]:
        out: list[Out] = []
        for obj in frames:
            if self.finished:
                break
            frame = from_json(obj)
            if isinstance(frame, bytes):
                out += self._binary(frame)
                continue
            kind = frame.get("type")
            data = frame.get("data")
            if kind in END_KINDS or (
                kind == "executing" and isinstance(data, dict) and data.get("node") is None
            ):
                self._held.append(frame)
                continue
            if kind == "executing" and isinstance(data, dict):
                self.current_node = str(data.get("display_node") or data.get("node"))
            if kind == "execution_start":
                self._held.clear()  # the end of an attempt that did not settle the job
                self.current_node = None
                self._fallback.started = True
                out += [*self._flush_legacy(), STATUS]
            if kind == "progress":
                out += [frame, *self._flush_legacy()]
            else:
                out += [*self._flush_legacy(), frame]
        return out

    def _end(self, event: JobEvent, job: Job | None) -> list[Out]:
        self.finished = True
        pending = self._flush_legacy()
        if self._held:
            ending = [self._rewrite(f) if f.get("type") == "executed" else f for f in self._held]
            closing = ending.pop() if ending[-1].get("type") == "executing" else None
            if closing is None:
                closing = {"type": "executing", "data": {"node": None, "prompt_id": self.prompt_id}}
            return [*pending, *ending, STATUS, closing]
        messages: list[Out] = list(self._fallback.feed(event, job))
        if not messages:
            return pending
        return [*pending, *messages[:-1], STATUS, messages[-1]]

    def _rewrite(self, frame: JSON) -> JSON:
        data = dict(frame.get("data") or {})
        node = str(data.get("node"))
        ordered = [self._outputs[k] for k in sorted(self._outputs)]
        stored = history_outputs(o for o in ordered if o.node_id == node).get(node, {})
        original = data.get("output")
        kept = (
            {k: v for k, v in original.items() if not _names_files(v)}
            if isinstance(original, dict)
            else {}
        )
        data["output"] = {**kept, **stored}
        return {"type": "executed", "data": data}

    def _binary(self, frame: bytes) -> list[Out]:
        if len(frame) < 4:
            return [frame]
        (kind,) = struct.unpack_from(">I", frame, 0)
        if kind not in (PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA):
            return [frame]
        preview: Any = parse_binary(frame)
        wants_metadata = kind == PREVIEW_IMAGE_WITH_METADATA
        if wants_metadata == self.preview_metadata:
            return [frame]
        if self.preview_metadata:  # a legacy frame from the backend, for a metadata client
            meta = {
                "node_id": None,
                "prompt_id": self.prompt_id,
                "display_node_id": None,
                "parent_node_id": None,
                "real_node_id": None,
                "image_type": preview.content_type,
            }
            return [preview_frame(preview.image, meta, metadata_frame=True)]
        meta = {"image_type": preview.content_type}
        self._legacy.append(preview_frame(preview.image, meta, metadata_frame=False))
        return []

    def _flush_legacy(self) -> list[Out]:
        frames: list[Out] = list(self._legacy)
        self._legacy.clear()
        return frames


def _names_files(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) and "filename" in v for v in value)


__all__ = ["END_KINDS", "STATUS", "ComfyRelay", "Out", "StatusSlot"]
