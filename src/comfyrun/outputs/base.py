"""The output storage interface: where job outputs (and asset blobs) live.

Every implementation (local directory, S3, in-memory fake) has the same semantics and passes the
same contract suite (tests/contract/outputs/). Keys are "/"-separated relative paths, validated by
`comfyrun.outputs.keys.validate_key`; a job's files live under "<job_id>/" so that retention
deletes them with one `delete_prefix`.

Writes are streamed: `put` consumes an async iterable of chunks and never holds the whole object in
memory; it computes the blake3 hash on the way. A `put` is atomic: readers see the old object or
the new one, never a partial one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from comfyrun.errors import NotFound


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored object.

    `hash` is "blake3:<hex>". `put` always returns it; `stat` returns it when the backend kept it
    (the S3 backend cannot attach it to an object uploaded in several parts, so it may be None).
    """

    key: str
    size_bytes: int
    hash: str | None
    content_type: str


@dataclass(frozen=True, slots=True)
class FileBytes:
    """What a `put_read` reads: the whole content of the file at `path`, which nobody will
    change. A storage of local files on the same filesystem links that file into place instead
    of writing the bytes again (no new file); any other stores `data`."""

    data: bytes
    path: Path


@runtime_checkable
class OutputStorage(Protocol):
    """A flat key -> bytes store for outputs and asset blobs, chosen by URL (see `open_output_storage`)."""

    #: "file", "s3" or "memory"
    scheme: str

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        """Store the streamed bytes under `key` (replacing any object there) and return what was
        stored, with its size and blake3 hash. Raises StorageError when the backend fails."""

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        """`put` for a payload already in memory (a small output): one trip to the disk or the
        network instead of one per step."""

    async def read_small(
        self, key: str, max_bytes: int
    ) -> tuple[StoredObject, bytes | None] | None:
        """The object's description and, when it is at most `max_bytes`, its bytes (else None);
        None when the key does not exist. One trip for a small download."""

    def open(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the object's bytes (from `offset`, at most `length` bytes):

            async for chunk in storage.open(key): ...

        An async generator: a missing key raises NotFound at the first iteration, so call `stat`
        first when a 404 must be decided before a response starts. Break out early and the
        file or connection is closed when the generator is closed (`aclose`)."""

    async def url(
        self,
        key: str,
        *,
        expires_s: int | None = None,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> tuple[str | None, float | None]:
        """A direct download URL and its expiry (seconds since the epoch), or (None, None) when
        the storage cannot hand one out (local files: the API serves them at
        /api/v2/files/{key}). S3 returns a presigned GET; `content_type`/`filename` set the
        response headers the URL will produce."""

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` and return how many there were.
        `prefix` must end with "/" (e.g. "<job_id>/"), so that "job1" never matches "job10"."""

    async def stat(self, key: str) -> StoredObject | None:
        """The stored object's description, or None when it does not exist."""

    async def close(self) -> None:
        """Release clients and threads (the app's lifespan calls it)."""


async def read_all(storage: OutputStorage, key: str) -> bytes:
    """The whole object in memory. Only for small objects (metadata, inline outputs)."""
    parts = [chunk async for chunk in storage.open(key)]
    return b"".join(parts)


async def read_inline(storage: OutputStorage, key: str, cap: int) -> str | None:
    """The object as base64 text when it is at most `cap` bytes, else None (the dispatcher then
    falls back to a URL). Raises NotFound when the key does not exist."""
    obj = await storage.stat(key)
    if obj is None:
        raise NotFound(f"output {key!r} does not exist", details={"key": key})
    if obj.size_bytes > cap:
        return None
    data = await read_all(storage, key)
    if len(data) > cap:  # replaced between stat and read
        return None
    return base64.b64encode(data).decode("ascii")


async def iterate_bytes(data: bytes, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """Feed an in-memory payload to `put` (tests, small metadata objects)."""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def put_read(
    storage: OutputStorage,
    key: str,
    read: Callable[[], bytes | FileBytes | None],
    *,
    content_type: str,
    on_loop: bool = False,
) -> StoredObject | None:
    """Store what the blocking `read()` returns (e.g. a local file's bytes) and return it;
    None, storing nothing, when it returns None. A storage of local files reads and writes in
    one trip to a thread (`put_read` of its own); any other reads in a thread, then puts.
    `on_loop`: the caller's word that `read` is quick (a small file on a disk of this machine):
    it is called on the event loop, and a storage of local files on such a disk writes there
    too."""
    own = getattr(storage, "put_read", None)
    if own is not None:
        stored: StoredObject | None = await own(
            key, read, content_type=content_type, on_loop=on_loop
        )
        return stored
    data = read() if on_loop else await asyncio.to_thread(read)
    if data is None:
        return None
    if isinstance(data, FileBytes):
        data = data.data
    return await storage.put_bytes(key, data, content_type=content_type)


__all__ = [
    "FileBytes",
    "OutputStorage",
    "StoredObject",
    "iterate_bytes",
    "put_read",
    "read_all",
    "read_inline",
]
