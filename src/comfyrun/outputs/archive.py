"""A zip archive written as a stream: entries go out as their bytes arrive, nothing is held
whole in memory or on disk. Entries are stored (not deflated): images and videos are
compressed already. Sizes go in data descriptors (and zip64 records), as for any zip written
to a pipe."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterable, AsyncIterator

#: (name in the archive, its bytes as they come)
Entry = tuple[str, AsyncIterable[bytes]]


class _Sink(io.RawIOBase):
    """Collects what zipfile writes; not seekable, so zipfile streams."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


async def zip_stream(entries: AsyncIterable[Entry]) -> AsyncIterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        async for name, chunks in entries:
            with archive.open(name, "w", force_zip64=True) as fh:
                async for chunk in chunks:
                    fh.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = ["Entry", "one_chunk", "zip_stream"]
