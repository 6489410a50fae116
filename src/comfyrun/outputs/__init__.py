"""Output storage: one interface (`OutputStorage`), implementations chosen by URL.

file:///abs/dir                     LocalOutputStorage (a plain path works too)
s3://bucket/prefix?endpoint_url=http://host:9000&region=us-east-1&part_size_mb=8&url_expires_s=3600
                                    S3OutputStorage (boto3 imported lazily)
memory://                           MemoryOutputStorage (tests)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from comfyrun.errors import InvalidRequest
from comfyrun.outputs.base import (
    FileBytes,
    OutputStorage,
    StoredObject,
    iterate_bytes,
    put_read,
    read_all,
    read_inline,
)
from comfyrun.outputs.classify import classify_output, content_type_for
from comfyrun.outputs.keys import (
    job_prefix,
    job_segment,
    output_key,
    safe_segment,
    validate_key,
)


def open_output_storage(url: str) -> OutputStorage:
    """The storage a URL names. Raises InvalidRequest for an unknown scheme or a bad URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        from comfyrun.outputs.local import LocalOutputStorage

        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidRequest("file:// storage URLs must be absolute: file:///abs/dir")
            return LocalOutputStorage(Path(unquote(parts.path)))
        return LocalOutputStorage(Path(url).resolve())
    if scheme == "s3":
        from comfyrun.outputs.s3 import S3OutputStorage

        if not parts.netloc:
            raise InvalidRequest("s3:// storage URLs need a bucket: s3://bucket/prefix")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {"endpoint_url", "region", "part_size_mb", "url_expires_s"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown s3 storage options: {', '.join(unknown)}",
                details={"known": sorted(known)},
            )
        try:
            part_size = int(float(query.get("part_size_mb", "8")) * 1024 * 1024)
            url_expires_s = int(query.get("url_expires_s", "3600"))
            return S3OutputStorage(
                parts.netloc,
                unquote(parts.path),
                endpoint_url=query.get("endpoint_url"),
                region=query.get("region"),
                part_size=part_size,
                url_expires_s=url_expires_s,
            )
        except ValueError as exc:
            raise InvalidRequest(f"bad s3 storage URL: {exc}") from exc
    if scheme == "memory":
        from comfyrun.outputs.memory import MemoryOutputStorage

        return MemoryOutputStorage()
    raise InvalidRequest(
        f"unsupported output storage scheme {scheme!r}",
        details={"supported": ["file", "s3", "memory"]},
    )


__all__ = [
    "FileBytes",
    "OutputStorage",
    "StoredObject",
    "classify_output",
    "content_type_for",
    "iterate_bytes",
    "job_prefix",
    "job_segment",
    "open_output_storage",
    "output_key",
    "put_read",
    "read_all",
    "read_inline",
    "safe_segment",
    "validate_key",
]
