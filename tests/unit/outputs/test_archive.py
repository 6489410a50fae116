"""The streamed zip: a valid archive whose bytes go out as entries arrive."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

from comfyrun.outputs.archive import Entry, one_chunk, zip_stream


async def test_entries_stream_out_and_make_a_valid_zip() -> None:
    pulled: list[str] = []

    async def big() -> AsyncIterator[bytes]:
        for i in range(4):
            pulled.append(f"big{i}")
            yield bytes([i]) * 100_000

    async def entries() -> AsyncIterator[Entry]:
        yield "a/one.txt", one_chunk(b"hello")
        yield "b/big.bin", big()

    chunks = []
    seen_before_last: list[str] = []
    async for chunk in zip_stream(entries()):
        if not chunks:
            seen_before_last = list(pulled)
        chunks.append(chunk)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.read("a/one.txt") == b"hello"
    assert len(archive.read("b/big.bin")) == 400_000
    assert seen_before_last == []  # the first bytes left before the big entry was read
    assert len(chunks) > 4
