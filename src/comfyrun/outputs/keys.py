"""Storage keys: validation and the naming of job outputs.

A key is a relative "/"-separated path of non-empty segments; no segment is "." or "..", starts
with the reserved ".comfyrun" prefix, or holds a backslash or a control character. The same key
is then safe as a file path under the local root and as an S3 object name under the prefix.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from comfyrun.errors import InvalidRequest

#: Segments starting with this are reserved for the storages' own bookkeeping.
RESERVED_PREFIX = ".comfyrun"
MAX_KEY_LENGTH = 1024
#: Top-level folders that belong to the storage's other users, never to a job: the assets
#: (comfyrun.assets.service) and ComfyUI's uploads (comfyrun.api.compat.comfy_uploads).
RESERVED_TOP_LEVEL = frozenset({"assets", "comfy-inputs", "comfy-inputs-of"})
#: A job folder that is not its job's id (a reserved name, unsafe characters) ends so.
_ESCAPED = re.compile(r"^_.*~[0-9a-f]{16}$", re.DOTALL)
_BACKSLASH_OR_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')


def validate_key(key: str) -> str:
    """Return `key` unchanged when it is a valid storage key, else raise InvalidRequest."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest("storage key is empty or too long", details={"key": key})
    if key.startswith("/") or _BACKSLASH_OR_CONTROL.search(key):
        raise InvalidRequest("storage key is not a safe relative path", details={"key": key})
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment.startswith(RESERVED_PREFIX):
            raise InvalidRequest("storage key has an unsafe segment", details={"key": key})
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix for `delete_prefix`: a valid key followed by "/"."""
    if not prefix.endswith("/"):
        raise InvalidRequest("a storage prefix must end with '/'", details={"prefix": prefix})
    validate_key(prefix[:-1])
    return prefix


def safe_segment(name: str, *, fallback: str = "file") -> str:
    """Make one path segment out of an arbitrary name, keeping it readable: unsafe characters
    become "_", leading dots are dropped (no hidden or "." / ".." segments), length is capped
    at 200 characters keeping the extension."""
    text = unicodedata.normalize("NFC", name)
    text = _UNSAFE_CHARS.sub("_", text).strip().lstrip(".")
    if not text or text.startswith(RESERVED_PREFIX):
        text = fallback if not text else f"_{text}"
    if len(text) > 200:
        stem, dot, ext = text.rpartition(".")
        text = f"{stem[: 200 - len(ext) - 1]}.{ext}" if dot and len(ext) <= 16 else text[:200]
    return text


def output_key(job_id: str, node_id: str, filename: str) -> str:
    """Where a job's output lives: "<job_id>/<node_id>/<filename>". Each job gets its own copy,
    even when ComfyUI re-reports the same file for a cached rerun, so deleting one job never
    breaks another."""
    return validate_key(
        "/".join(
            (job_segment(job_id), safe_segment(node_id, fallback="node"), safe_segment(filename))
        )
    )


def job_prefix(job_id: str) -> str:
    """The prefix holding all of a job's outputs, for `delete_prefix` at retention time."""
    return validate_prefix(f"{job_segment(job_id)}/")


def job_segment(job_id: str) -> str:
    """A job's top-level folder: its id, where that is a safe segment and names none of the
    storage's own namespaces ("assets", the uploads'); else `_<the id made safe>~<its hash>`,
    which no other id's folder is (a client may choose a ComfyUI prompt id: "assets", or
    "a:b" beside another's "a_b", must not share another's folder)."""
    segment = safe_segment(job_id, fallback="job")
    plain = segment == job_id and segment.lower() not in RESERVED_TOP_LEVEL
    if plain and not _ESCAPED.match(segment):
        return segment
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"_{segment[:64]}~{digest}"


__all__ = [
    "job_prefix",
    "job_segment",
    "output_key",
    "safe_segment",
    "validate_key",
    "validate_prefix",
]
