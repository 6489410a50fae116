"""comfyrun's exception tree. Only the API layer maps these to HTTP status codes.

    ComfyrunError
    ├── NotFound                       a job, asset or backend that does not exist
    │   └── BlobNotFound               no stored bytes with that hash (assets from-hash)
    ├── Conflict                       a compare-and-set lost, or a state that forbids the action
    │   ├── IllegalTransition          the job state machine refused an event
    │   ├── IdempotencyKeyReuse        same Idempotency-Key, other body
    │   ├── IdempotencyInFlight        same key, first request still being handled
    │   └── HashMismatch               uploaded bytes do not match the declared hash
    ├── InvalidRequest                 bad input from a caller (4xx)
    │   ├── InvalidWorkflow            ComfyUI (or our own checks) rejected the workflow
    │   │   └── NoBackendFits          no configured backend has its nodes/models/labels
    │   ├── ConversionError            a UI-format workflow could not be converted
    │   ├── MissingAsset               an asset reference that resolves to nothing
    │   ├── InvalidTemplate            a workflow template that is broken cannot run
    │   ├── InvalidParams              template or handler parameters that break its schema
    │   ├── UnservedJobType            a job type no worker serves (comfyrun.handlers)
    │   └── InputRejected              an input (URL, base64, file) broke a limit or a rule
    ├── Forbidden                      the caller's key lacks the scope for that
    ├── QueueFull                      the configured queue bound is reached
    │   └── QuotaExceeded              the caller's key is at its quota
    ├── StoreError                     the durable store failed
    ├── StorageError                   the output storage failed
    ├── BackendError                   a ComfyUI backend failed (see comfyrun.comfy.errors)
    └── HandlerError                   a job's handler failed (raised by handlers)

Each exception's docstring is its default message.
"""

from __future__ import annotations

import errno
from typing import Any


class ComfyrunError(Exception):
    """comfyrun failed."""

    code = "internal_error"

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.__class__.__name__).strip()
        self.details = details
        super().__init__(self.message)


class NotFound(ComfyrunError):
    """Not found."""

    code = "not_found"


class BlobNotFound(NotFound):
    """No blob with that hash exists."""

    code = "blob_not_found"


class Conflict(ComfyrunError):
    """The resource changed under you; read it again."""

    code = "conflict"


class IllegalTransition(Conflict):
    """That event is not allowed in the job's current state."""

    code = "illegal_transition"


class IdempotencyKeyReuse(Conflict):
    """This Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reuse"


class IdempotencyInFlight(Conflict):
    """A request with this Idempotency-Key is still being handled; retry shortly."""

    code = "idempotency_conflict"


class HashMismatch(Conflict):
    """The uploaded bytes do not match the expected hash."""

    code = "hash_mismatch"


class InvalidRequest(ComfyrunError):
    """The request is invalid."""

    code = "invalid_request"


class InvalidWorkflow(InvalidRequest):
    """The workflow is invalid."""

    code = "invalid_workflow"


class NoBackendFits(InvalidWorkflow):
    """No configured backend can run this job."""

    code = "no_backend_fits"


class ConversionError(InvalidRequest):
    """The UI-format workflow could not be converted to an API prompt."""

    code = "workflow_conversion_failed"


class MissingAsset(InvalidRequest):
    """An asset referenced by the workflow does not exist."""

    code = "missing_asset"


class InvalidTemplate(InvalidRequest):
    """The workflow template is broken and cannot run."""

    code = "invalid_template"


class InvalidParams(InvalidRequest):
    """The parameters do not match the workflow template's schema."""

    code = "invalid_params"


class InputRejected(InvalidRequest):
    """An input was refused."""

    code = "input_rejected"


class UnservedJobType(InvalidRequest):
    """No worker serves this job type."""

    code = "unserved_job_type"


class QueueFull(ComfyrunError):
    """The queue is full; retry later."""

    code = "queue_full"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(QueueFull):
    """This key is at its quota; retry later."""

    code = "quota_exceeded"


class Forbidden(ComfyrunError):
    """This key may not do that."""

    code = "forbidden"


class StoreError(ComfyrunError):
    """The job store failed."""

    code = "store_error"


class StorageError(ComfyrunError):
    """The output storage failed."""

    code = "storage_error"


class BackendError(ComfyrunError):
    """A ComfyUI backend failed."""

    code = "backend_error"


class HandlerError(ComfyrunError):
    """The job's handler failed.

    Raised by a handler (comfyrun.handlers) to fail its job with a clear message: final,
    unless `retryable` (then retried like a lost backend, within the job's max_retries)."""

    code = "handler_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, details=details)
        if code is not None:
            self.code = code
        self.retryable = retryable


#: The errnos of a full disk: no space left, or the user's quota spent.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it: a StorageError raised from an OSError) is a full disk."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain, not a loop
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


__all__ = [
    "DISK_FULL_ERRNOS",
    "BackendError",
    "BlobNotFound",
    "ComfyrunError",
    "Conflict",
    "ConversionError",
    "Forbidden",
    "HandlerError",
    "HashMismatch",
    "IdempotencyInFlight",
    "IdempotencyKeyReuse",
    "IllegalTransition",
    "InputRejected",
    "InvalidParams",
    "InvalidRequest",
    "InvalidTemplate",
    "InvalidWorkflow",
    "MissingAsset",
    "NoBackendFits",
    "NotFound",
    "QueueFull",
    "QuotaExceeded",
    "StorageError",
    "StoreError",
    "UnservedJobType",
    "is_disk_full",
]
