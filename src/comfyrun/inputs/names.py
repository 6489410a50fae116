"""File names of inputs: sanitizing what callers send, and where each job's files are placed."""

from __future__ import annotations

import re
import unicodedata

from comfyrun.errors import InputRejected

#: Characters Windows, ComfyUI's annotated names ("x.png [input]") or shells trip over.
_FORBIDDEN = re.compile(r'[<>:"|?*\[\]]')
PLACEMENT_ROOT = "comfyrun"
MAX_NAME_LENGTH = 255


def sanitize_name(name: str, *, index: int | None = None) -> str:
    """A caller's file name, checked: a relative path ("photo.png" or "masks/a.png") with no
    traversal, no absolute path or drive, no control characters, no empty or dot segments and
    an extension kept as sent. Raises InputRejected with a clear reason otherwise."""
    details = {"index": index, "name": name}
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise InputRejected("input name is empty", details={**details, "reason": "empty_name"})
    if len(text) > MAX_NAME_LENGTH:
        raise InputRejected("input name is too long", details={**details, "reason": "long_name"})
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        raise InputRejected(
            "input name holds control characters", details={**details, "reason": "control_chars"}
        )
    if "\\" in text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise InputRejected(
            f"input name {name!r} must be a relative path",
            details={**details, "reason": "absolute_path"},
        )
    segments = text.split("/")
    if any(seg in ("..", ".") for seg in segments):
        raise InputRejected(
            f"input name {name!r} tries to leave its folder",
            details={**details, "reason": "path_traversal"},
        )
    if any(not seg.strip() or seg.startswith(".") for seg in segments):
        raise InputRejected(
            f"input name {name!r} has an empty or hidden path segment",
            details={**details, "reason": "bad_segment"},
        )
    if _FORBIDDEN.search(text):
        raise InputRejected(
            f"input name {name!r} holds a character that is not allowed in file names",
            details={**details, "reason": "forbidden_chars"},
        )
    return text


def placement_name(job_id: str, name: str) -> str:
    """Where a job's input goes, relative to ComfyUI's input folder and unique per job:
    "comfyrun/<job_id>/<name>". This is also the value the workflow will hold."""
    safe_job = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id).lstrip(".") or "job"
    return f"{PLACEMENT_ROOT}/{safe_job}/{name}"


def split_placement(placed: str) -> tuple[str, str]:
    """(subfolder, file name) of a placed name, as ComfyUI's /upload/image wants them."""
    subfolder, _, filename = placed.rpartition("/")
    return subfolder, filename


__all__ = ["placement_name", "sanitize_name", "split_placement"]
