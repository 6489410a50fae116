"""The asset record: a UUID-identified, immutable reference to content-addressed bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from comfyrun.errors import InvalidRequest

_HASH = re.compile(r"^blake3:[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Asset:
    """One asset. `storage_key` is where its bytes live in the output storage:
    "assets/blobs/<hex>" for uploads, the output's own key for job outputs registered as assets."""

    id: str
    hash: str
    size_bytes: int
    content_type: str
    file_path: str | None
    tags: tuple[str, ...]
    created_at: float
    storage_key: str
    job_id: str | None = None
    owner: str | None = None  # the API key that made it (None: an admin)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hash": self.hash,
            "size_bytes": self.size_bytes,
            "content_type": self.content_type,
            "file_path": self.file_path,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "storage_key": self.storage_key,
            "job_id": self.job_id,
            "owner": self.owner,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Asset:
        return cls(
            id=str(data["id"]),
            hash=str(data["hash"]),
            size_bytes=int(data["size_bytes"]),
            content_type=str(data["content_type"]),
            file_path=data.get("file_path"),
            tags=tuple(str(t) for t in data.get("tags") or ()),
            created_at=float(data["created_at"]),
            storage_key=str(data["storage_key"]),
            job_id=data.get("job_id"),
            owner=data.get("owner"),
        )


def normalize_hash(value: str) -> str:
    """ "blake3:<64 hex>" in lower case; InvalidRequest for anything else."""
    text = value.strip()
    if text[:7].lower() == "blake3:":
        text = "blake3:" + text[7:].lower()
    if not _HASH.match(text):
        raise InvalidRequest(
            "a hash must be written blake3:<64 hex digits>",
            details={"hash": value, "reason": "bad_hash"},
        )
    return text


def is_valid_asset_id(value: str) -> bool:
    return bool(_ID.match(value))


__all__ = ["Asset", "is_valid_asset_id", "normalize_hash"]
