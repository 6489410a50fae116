"""The client's error types and the out-of-memory and disk-full checks."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tests.support.comfy import load

from comfyrun.comfy import errors as e
from comfyrun.errors import BackendError, StorageError, is_disk_full


@pytest.mark.parametrize(
    ("exception_type", "message", "oom"),
    [
        ("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("torch.cuda.OutOfMemoryError", "", True),
        ("RuntimeError", "Allocation on device 0 would exceed allowed memory", True),
        ("RuntimeError", "MPS backend out of memory", True),
        ("safetensors._safetensors_rust.SafetensorError", "header too large", False),
        (None, None, False),
    ],
)
def test_is_out_of_memory(exception_type: str | None, message: str | None, oom: bool) -> None:
    assert e.is_out_of_memory(exception_type, message) is oom
    error = e.ComfyExecutionError(message, exception_type=exception_type)
    assert error.out_of_memory is oom


@pytest.mark.parametrize(
    ("exception_type", "message", "full"),
    [
        ("OSError", "[Errno 28] No space left on device", True),
        ("OSError", "[Errno 122] Disk quota exceeded", True),
        ("OSError", "[Errno 13] Permission denied: '/out/x.png'", False),
        ("RuntimeError", "boom", False),
        (None, None, False),
    ],
)
def test_is_disk_full(exception_type: str | None, message: str | None, full: bool) -> None:
    assert e.is_disk_full(exception_type, message) is full
    assert e.ComfyExecutionError(message, exception_type=exception_type).disk_full is full


def test_a_full_disk_is_told_through_the_errors_it_caused() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise StorageError("cannot store 'x'") from exc
    except StorageError as stored:
        assert is_disk_full(stored)
    assert not is_disk_full(StorageError("cannot store 'x'"))


def test_every_error_is_a_backend_error() -> None:
    for cls in (
        e.ComfyConnectionError,
        e.ComfyPromptLost,
        e.ComfyTimeout,
        e.ComfyValidationError,
        e.ComfyExecutionError,
        e.ComfyInterrupted,
        e.ComfyProtocolError,
    ):
        assert issubclass(cls, BackendError)
    assert issubclass(e.ComfyPromptLost, e.ComfyConnectionError)
    assert isinstance(e.ComfyHTTPError(status=502), BackendError)


def test_validation_error_carries_comfy_body_unchanged(shared_dir: Path) -> None:
    cases = load(shared_dir, "post_prompt_errors.json")
    bad = [c["body"] for c in cases.values() if c["status"] == 400]
    assert bad
    for body in bad:
        error = e.ComfyValidationError(error=body["error"], node_errors=body["node_errors"])
        assert error.error == body["error"]
        assert error.node_errors == body["node_errors"]
        assert error.error_type == body["error"]["type"]
        assert error.message == body["error"]["message"]
        assert error.details == {"error": body["error"], "node_errors": body["node_errors"]}


def test_default_messages() -> None:
    assert e.ComfyInterrupted().message == "The prompt was interrupted."
    assert "503" in e.ComfyHTTPError(status=503, method="GET", path="/queue").message
