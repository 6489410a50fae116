"""GET /history/{id} and GET /queue bodies as plain data; no I/O.

A history entry is written when a prompt finishes, before the final `executing` node=None event.
`status.status_str` is "success" or "error"; a runtime error and an interrupt are both "error"
and differ only in `status.messages` (the last one is `execution_error` or
`execution_interrupted`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.messages import (
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    TextMessage,
    parse_event,
)
from comfyrun.comfy.outputs import OutputItem, parse_outputs

JSON = dict[str, Any]
Outcome = Literal["success", "error", "interrupted"]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    prompt_id: str
    number: float | None
    prompt: JSON = field(hash=False)
    extra_data: JSON = field(hash=False)
    outputs_to_execute: tuple[str, ...]
    raw_outputs: JSON = field(hash=False)
    outputs: dict[str, list[OutputItem]] = field(hash=False)
    status_str: str | None
    completed: bool
    messages: tuple[TextMessage, ...]
    meta: JSON = field(hash=False)

    @property
    def outcome(self) -> Outcome:
        if self.interrupted is not None:
            return "interrupted"
        if self.status_str == "success" or (self.status_str is None and self.completed):
            return "success"
        return "error"

    @property
    def error(self) -> ExecutionError | None:
        return next((m for m in self.messages if isinstance(m, ExecutionError)), None)

    @property
    def interrupted(self) -> ExecutionInterrupted | None:
        return next((m for m in self.messages if isinstance(m, ExecutionInterrupted)), None)

    @property
    def cached_nodes(self) -> tuple[str, ...]:
        for m in self.messages:
            if isinstance(m, ExecutionCached):
                return m.nodes
        return ()


def parse_history_entry(prompt_id: str, data: Mapping[str, Any]) -> HistoryEntry:
    """Parse one value of a GET /history body."""
    try:
        prompt_tuple = list(data.get("prompt") or [])
        number = prompt_tuple[0] if len(prompt_tuple) > 0 else None
        prompt = prompt_tuple[2] if len(prompt_tuple) > 2 else {}
        extra = prompt_tuple[3] if len(prompt_tuple) > 3 else {}
        to_execute = prompt_tuple[4] if len(prompt_tuple) > 4 else []
        status = data.get("status") or {}
        messages = tuple(
            parse_event(str(pair[0]), pair[1] if len(pair) > 1 else {})
            for pair in status.get("messages") or []
        )
        raw_outputs = dict(data.get("outputs") or {})
        return HistoryEntry(
            prompt_id=str(prompt_id),
            number=float(number) if isinstance(number, int | float) else None,
            prompt=dict(prompt) if isinstance(prompt, Mapping) else {},
            extra_data=dict(extra) if isinstance(extra, Mapping) else {},
            outputs_to_execute=tuple(str(n) for n in to_execute),
            raw_outputs=raw_outputs,
            outputs=parse_outputs(raw_outputs),
            status_str=status.get("status_str"),
            completed=bool(status.get("completed", False)),
            messages=messages,
            meta=dict(data.get("meta") or {}),
        )
    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
        raise ComfyProtocolError(f"malformed history entry for {prompt_id}: {exc!r}") from exc


def parse_history(body: Any, prompt_id: str) -> HistoryEntry | None:
    """The entry for `prompt_id` in a GET /history/{id} body; None when the body is `{}`."""
    if not isinstance(body, Mapping):
        raise ComfyProtocolError("history body is not an object")
    data = body.get(prompt_id)
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ComfyProtocolError(f"history entry for {prompt_id} is not an object")
    return parse_history_entry(prompt_id, data)


@dataclass(frozen=True, slots=True)
class QueueItem:
    number: float
    prompt_id: str
    prompt: JSON = field(hash=False, repr=False)
    extra_data: JSON = field(hash=False, repr=False)
    outputs_to_execute: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueState:
    """GET /queue: prompt ids running now and waiting, in ComfyUI's order."""

    running: list[str] = field(hash=False)
    pending: list[str] = field(hash=False)
    running_items: tuple[QueueItem, ...] = field(default=(), repr=False)
    pending_items: tuple[QueueItem, ...] = field(default=(), repr=False)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


def _queue_items(raw: Any) -> tuple[QueueItem, ...]:
    items = []
    for entry in raw or []:
        entry = list(entry)
        items.append(
            QueueItem(
                number=float(entry[0]),
                prompt_id=str(entry[1]),
                prompt=dict(entry[2]) if len(entry) > 2 and isinstance(entry[2], Mapping) else {},
                extra_data=(
                    dict(entry[3]) if len(entry) > 3 and isinstance(entry[3], Mapping) else {}
                ),
                outputs_to_execute=tuple(str(n) for n in (entry[4] if len(entry) > 4 else [])),
            )
        )
    return tuple(items)


def parse_queue(body: Any) -> QueueState:
    """Parse a GET /queue body."""
    if not isinstance(body, Mapping):
        raise ComfyProtocolError("queue body is not an object")
    try:
        running = _queue_items(body.get("queue_running"))
        pending = tuple(sorted(_queue_items(body.get("queue_pending")), key=lambda i: i.number))
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ComfyProtocolError(f"malformed queue body: {exc!r}") from exc
    return QueueState(
        running=[i.prompt_id for i in running],
        pending=[i.prompt_id for i in pending],
        running_items=running,
        pending_items=pending,
    )


__all__ = [
    "HistoryEntry",
    "Outcome",
    "QueueItem",
    "QueueState",
    "parse_history",
    "parse_history_entry",
    "parse_queue",
]
