"""Typed errors of the ComfyUI client, all under `comfyrun.errors.BackendError`.

BackendError
├── ComfyConnectionError     the server could not be reached, or the connection broke
│   └── ComfyPromptLost      a prompt is neither queued, running nor in history
├── ComfyTimeout             a call (or a wait for a result) ran past its timeout
├── ComfyValidationError     POST /prompt answered 400; carries ComfyUI's body unchanged
├── ComfyExecutionError      a node raised while the prompt ran
├── ComfyInterrupted         the prompt was interrupted
├── ComfyHTTPError           any other unexpected HTTP status
└── ComfyProtocolError       a frame or body that does not follow the protocol
"""

from __future__ import annotations

from typing import Any

from comfyrun.errors import BackendError

JSON = dict[str, Any]

_OOM_MARKERS = ("outofmemory", "out of memory", "allocation on device")


def is_out_of_memory(exception_type: str | None, message: str | None) -> bool:
    """Whether a node's exception looks like the device ran out of memory.

    torch raises `torch.OutOfMemoryError` ("CUDA out of memory ...") and ComfyUI's own allocator
    check raises with "Allocation on device"; both mean a retry after freeing memory may succeed.
    """
    text = f"{exception_type or ''} {message or ''}".lower()
    return any(marker in text for marker in _OOM_MARKERS)


#: What an exception says when its disk is full (ENOSPC, EDQUOT), as Python words it.
_DISK_FULL_MARKERS = ("[errno 28]", "[errno 122]", "no space left on device", "disk quota exceeded")


def is_disk_full(exception_type: str | None, message: str | None) -> bool:
    """Whether a node's exception says its disk is full (a SaveImage on a full disk raises
    `OSError: [Errno 28] No space left on device`): the machine's state, not the workflow's
    fault; a retry once space is freed, or on another backend, may succeed."""
    text = f"{exception_type or ''} {message or ''}".lower()
    return any(marker in text for marker in _DISK_FULL_MARKERS)


class ComfyConnectionError(BackendError):
    """The ComfyUI server could not be reached."""

    code = "backend_unreachable"


class ComfyPromptLost(ComfyConnectionError):
    """The prompt vanished from the server: it is neither queued, running nor in history."""

    code = "backend_lost"

    def __init__(self, message: str | None = None, *, prompt_id: str | None = None) -> None:
        super().__init__(message, details={"prompt_id": prompt_id})
        self.prompt_id = prompt_id


class ComfyTimeout(BackendError):
    """The ComfyUI server did not answer in time."""

    code = "backend_timeout"


class ComfyValidationError(BackendError):
    """ComfyUI rejected the prompt."""

    code = "invalid_workflow"

    def __init__(
        self,
        message: str | None = None,
        *,
        error: JSON | None = None,
        node_errors: JSON | None = None,
    ) -> None:
        self.error: JSON = dict(error or {})
        self.node_errors: JSON = dict(node_errors or {})
        super().__init__(
            message or self.error.get("message") or None,
            details={"error": self.error, "node_errors": self.node_errors},
        )

    @property
    def error_type(self) -> str | None:
        """ComfyUI's `error.type`, e.g. `prompt_outputs_failed_validation`."""
        value = self.error.get("type")
        return value if isinstance(value, str) else None


class ComfyExecutionError(BackendError):
    """A node failed while the prompt ran."""

    code = "node_execution_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
        traceback: str | None = None,
        prompt_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            details={
                "prompt_id": prompt_id,
                "node_id": node_id,
                "node_type": node_type,
                "exception_type": exception_type,
            },
        )
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.traceback = traceback
        self.prompt_id = prompt_id

    @property
    def out_of_memory(self) -> bool:
        return is_out_of_memory(self.exception_type, self.message)

    @property
    def disk_full(self) -> bool:
        return is_disk_full(self.exception_type, self.message)


class ComfyInterrupted(BackendError):
    """The prompt was interrupted."""

    code = "interrupted"

    def __init__(
        self,
        message: str | None = None,
        *,
        prompt_id: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
    ) -> None:
        super().__init__(
            message, details={"prompt_id": prompt_id, "node_id": node_id, "node_type": node_type}
        )
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type


class ComfyHTTPError(BackendError):
    """The ComfyUI server answered with an unexpected HTTP status."""

    code = "backend_http_error"

    def __init__(
        self, message: str | None = None, *, status: int, method: str = "", path: str = ""
    ) -> None:
        super().__init__(
            message or f"{method} {path} answered HTTP {status}".strip(),
            details={"status": status, "method": method, "path": path},
        )
        self.status = status
        self.method = method
        self.path = path


class ComfyProtocolError(BackendError):
    """The ComfyUI server sent something that does not follow its protocol."""

    code = "backend_protocol_error"


__all__ = [
    "ComfyConnectionError",
    "ComfyExecutionError",
    "ComfyHTTPError",
    "ComfyInterrupted",
    "ComfyPromptLost",
    "ComfyProtocolError",
    "ComfyTimeout",
    "ComfyValidationError",
    "is_disk_full",
    "is_out_of_memory",
]
