"""One ComfyUI server: its protocol parsed without the network, and an async client.

`messages` (frames → objects), `tracker` (one prompt's state), `history` and `outputs` (bodies →
objects) and `result` are pure; `socket` and `client` (with its mixins `socket_events` and
`transfers`) do the I/O. Nothing here knows of jobs.
"""

from comfyrun.comfy.client import ComfyClient, SubmitResult, UploadResult, ViewStream
from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyExecutionError,
    ComfyHTTPError,
    ComfyInterrupted,
    ComfyPromptLost,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyValidationError,
    is_out_of_memory,
)
from comfyrun.comfy.history import HistoryEntry, QueueState
from comfyrun.comfy.outputs import FileRef, OutputItem, ValueOutput, guess_media
from comfyrun.comfy.result import PromptResult
from comfyrun.comfy.tracker import PromptState, PromptTracker
from comfyrun.comfy.watch import PromptWatch

__all__ = [
    "ComfyClient",
    "ComfyConnectionError",
    "ComfyExecutionError",
    "ComfyHTTPError",
    "ComfyInterrupted",
    "ComfyPromptLost",
    "ComfyProtocolError",
    "ComfyTimeout",
    "ComfyValidationError",
    "FileRef",
    "HistoryEntry",
    "OutputItem",
    "PromptResult",
    "PromptState",
    "PromptTracker",
    "PromptWatch",
    "QueueState",
    "SubmitResult",
    "UploadResult",
    "ValueOutput",
    "ViewStream",
    "guess_media",
    "is_out_of_memory",
]
