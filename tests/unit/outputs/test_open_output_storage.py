"""Choosing a storage by URL, and the inline helper on the in-memory fake."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from comfyrun.errors import InvalidRequest
from comfyrun.outputs import iterate_bytes, open_output_storage, read_all, read_inline
from comfyrun.outputs.local import LocalOutputStorage
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.outputs.s3 import S3OutputStorage


def test_file_url() -> None:
    storage = open_output_storage("file:///var/lib/comfyrun/outputs")
    assert isinstance(storage, LocalOutputStorage)
    assert storage.root == Path("/var/lib/comfyrun/outputs")
    assert storage.scheme == "file"


def test_file_url_with_spaces_is_unquoted() -> None:
    storage = open_output_storage("file:///data/my%20outputs")
    assert isinstance(storage, LocalOutputStorage) and storage.root == Path("/data/my outputs")


def test_s3_url_options() -> None:
    storage = open_output_storage(
        "s3://bucket/some/prefix/?endpoint_url=http://127.0.0.1:9&region=eu-west-1"
        "&part_size_mb=16&url_expires_s=600"
    )
    assert isinstance(storage, S3OutputStorage)
    assert (storage.bucket, storage.prefix) == ("bucket", "some/prefix")
    assert storage.part_size == 16 * 1024 * 1024 and storage.url_expires_s == 600


def test_memory_url() -> None:
    assert isinstance(open_output_storage("memory://"), MemoryOutputStorage)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "file://host/relative",
        "s3://",
        "s3://bucket/p?bogus=1",
        "s3://bucket/p?part_size_mb=1",
        "s3://bucket/p?part_size_mb=lots",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidRequest):
        open_output_storage(url)


async def test_read_inline_and_read_all_on_the_fake() -> None:
    storage = MemoryOutputStorage()
    await storage.put("j/1/a.png", iterate_bytes(b"\x89PNG data"), content_type="image/png")
    assert await read_all(storage, "j/1/a.png") == b"\x89PNG data"
    assert base64.b64decode(await read_inline(storage, "j/1/a.png", 64) or "") == b"\x89PNG data"
    assert await read_inline(storage, "j/1/a.png", 3) is None
