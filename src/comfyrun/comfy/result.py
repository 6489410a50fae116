"""What a finished prompt produced, built from a tracker or a history entry; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from comfyrun.comfy.errors import (
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyPromptLost,
)
from comfyrun.comfy.history import HistoryEntry
from comfyrun.comfy.messages import ExecutionError, ExecutionInterrupted, TextMessage
from comfyrun.comfy.outputs import FileRef, OutputItem, files, parse_outputs
from comfyrun.comfy.tracker import PromptState, PromptTracker
from comfyrun.errors import BackendError

ResultStatus = Literal["success", "error", "interrupted", "lost"]
Source = Literal["websocket", "history"]


@dataclass(frozen=True, slots=True)
class PromptResult:
    """The outcome of one prompt.

    `outputs` maps node id to its files and values; on error it still holds what the nodes that
    finished before the failure produced. `error` is the typed exception for any status other
    than success (`raise_for_status()` raises it). `source` says whether the result came from
    websocket events or from GET /history.
    """

    prompt_id: str
    status: ResultStatus
    outputs: dict[str, list[OutputItem]] = field(hash=False)
    error: BackendError | None = None
    cached_nodes: tuple[str, ...] = ()
    messages: tuple[TextMessage, ...] = ()
    source: Source = "websocket"

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def files(self) -> list[FileRef]:
        return files(self.outputs)

    @property
    def reused_outputs(self) -> tuple[str, ...]:
        """Output nodes served from ComfyUI's cache: their files are those of an earlier
        prompt (same names, nothing new written), so they may since have been moved away."""
        return tuple(node for node in self.outputs if node in self.cached_nodes)

    def raise_for_status(self) -> PromptResult:
        if self.error is not None:
            raise self.error
        return self


def execution_error(prompt_id: str, message: ExecutionError) -> ComfyExecutionError:
    return ComfyExecutionError(
        message.exception_message.strip() or message.exception_type or None,
        node_id=message.node_id,
        node_type=message.node_type,
        exception_type=message.exception_type,
        traceback="".join(message.traceback) or None,
        prompt_id=prompt_id,
    )


def interrupted_error(prompt_id: str, message: ExecutionInterrupted | None) -> ComfyInterrupted:
    return ComfyInterrupted(
        prompt_id=prompt_id,
        node_id=message.node_id if message else None,
        node_type=message.node_type if message else None,
    )


def _error_for(
    prompt_id: str,
    status: ResultStatus,
    error: ExecutionError | None,
    interruption: ExecutionInterrupted | None,
) -> BackendError | None:
    if status == "error":
        if error is not None:
            return execution_error(prompt_id, error)
        return ComfyExecutionError(
            "the prompt failed without an execution_error", prompt_id=prompt_id
        )
    if status == "interrupted":
        return interrupted_error(prompt_id, interruption)
    if status == "lost":
        return ComfyPromptLost(prompt_id=prompt_id)
    return None


def result_from_tracker(tracker: PromptTracker, *, source: Source = "websocket") -> PromptResult:
    """The result of a tracker whose outcome is known."""
    if not tracker.terminal:
        raise ValueError(f"prompt {tracker.prompt_id} has no outcome yet ({tracker.state})")
    status: ResultStatus = tracker.state.value  # type: ignore[assignment]
    return PromptResult(
        prompt_id=tracker.prompt_id,
        status=status,
        outputs=parse_outputs(tracker.outputs) if tracker.state is not PromptState.LOST else {},
        error=_error_for(tracker.prompt_id, status, tracker.error, tracker.interruption),
        cached_nodes=tracker.cached_nodes,
        messages=tuple(tracker.messages),
        source=source,
    )


def result_from_history(entry: HistoryEntry) -> PromptResult:
    status: ResultStatus = entry.outcome
    return PromptResult(
        prompt_id=entry.prompt_id,
        status=status,
        outputs=entry.outputs,
        error=_error_for(entry.prompt_id, status, entry.error, entry.interrupted),
        cached_nodes=entry.cached_nodes,
        messages=entry.messages,
        source="history",
    )


__all__ = [
    "PromptResult",
    "ResultStatus",
    "execution_error",
    "interrupted_error",
    "result_from_history",
    "result_from_tracker",
]
