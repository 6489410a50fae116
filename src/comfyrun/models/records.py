"""What the model cache holds and hears: a cached file, the validators a URL's answer carried,
and the callbacks of its downloads (progress, the downloader itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from comfyrun.models.specs import ModelRef

#: (bytes so far, total or None)
Progress = Callable[[int, int | None], None]
#: (which model, bytes so far, total or None)
ModelProgress = Callable[[ModelRef, int, int | None], None]


@dataclass(frozen=True, slots=True)
class Validators:
    """What a URL's answer said of its bytes, kept to revalidate them later with a conditional
    GET (`ETag` -> If-None-Match, `Last-Modified` -> If-Modified-Since)."""

    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    #: (a conditional GET's answer) the bytes did not change: nothing was written
    not_modified: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"etag": self.etag, "last_modified": self.last_modified, "size": self.size}


#: Writes the bytes of `ref` into the file `dest` and returns what the source said of them
#: (None: nothing worth keeping); raises a ComfyrunError when it cannot. Called with
#: `revalidate=` (the validators kept) only by `ModelCache.refresh`: a downloader that can
#: ask conditionally returns `not_modified` and writes nothing when the bytes are the same.
Downloader = Callable[..., Awaitable["Validators | None"]]


@dataclass(slots=True)
class CachedModel:
    """One file in the cache."""

    blake3: str
    size_bytes: int
    sha256: str | None = None
    sources: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # "folder/name"
    last_used: float = 0.0
    in_use: int = 0
    #: per URL source: the validators its last answer carried, and when (to refresh by)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": f"blake3:{self.blake3}",
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "sources": list(self.sources),
            "names": list(self.names),
            "last_used": self.last_used,
            "in_use": self.in_use,
            "validators": {k: dict(v) for k, v in self.validators.items()},
        }


__all__ = ["CachedModel", "Downloader", "ModelProgress", "Progress", "Validators"]
