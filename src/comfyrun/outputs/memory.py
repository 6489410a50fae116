"""An in-memory output storage ("memory://"): the fake for unit tests of the code that uses
storage. It runs the same contract suite as the real backends."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import blake3

from comfyrun.errors import NotFound
from comfyrun.outputs.base import StoredObject, iterate_bytes
from comfyrun.outputs.keys import validate_key, validate_prefix


@dataclass(frozen=True, slots=True)
class _Blob:
    data: bytes
    obj: StoredObject


class MemoryOutputStorage:
    """Objects in a dict. Not for production: everything is held in memory."""

    scheme = "memory"

    def __init__(self) -> None:
        self._blobs: dict[str, _Blob] = {}

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        validate_key(key)
        hasher = blake3.blake3()
        parts: list[bytes] = []
        async for chunk in chunks:
            hasher.update(chunk)
            parts.append(chunk)
        data = b"".join(parts)
        obj = StoredObject(key, len(data), f"blake3:{hasher.hexdigest()}", content_type)
        self._blobs[key] = _Blob(data, obj)
        return obj

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        return await self.put(key, iterate_bytes(data), content_type=content_type)

    async def read_small(
        self, key: str, max_bytes: int
    ) -> tuple[StoredObject, bytes | None] | None:
        blob = self._blobs.get(validate_key(key))
        if blob is None:
            return None
        return blob.obj, (blob.data if len(blob.data) <= max_bytes else None)

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        blob = self._blobs.get(validate_key(key))
        if blob is None:
            raise NotFound(f"output {key!r} does not exist", details={"key": key})
        end = len(blob.data) if length is None else offset + length
        data = blob.data[offset:end]
        for start in range(0, len(data), 1 << 16):
            yield data[start : start + (1 << 16)]

    async def url(
        self,
        key: str,
        *,
        expires_s: int | None = None,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> tuple[str | None, float | None]:
        validate_key(key)
        return None, None

    async def delete(self, key: str) -> None:
        self._blobs.pop(validate_key(key), None)

    async def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        doomed = [key for key in self._blobs if key.startswith(prefix)]
        for key in doomed:
            del self._blobs[key]
        return len(doomed)

    async def stat(self, key: str) -> StoredObject | None:
        blob = self._blobs.get(validate_key(key))
        return None if blob is None else blob.obj

    async def close(self) -> None:
        return None


__all__ = ["MemoryOutputStorage"]
