"""Test helpers for outputs, inputs and assets: a real S3-compatible server (moto's server
mode, on a free port) and byte streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import blake3
import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 500
BIG = 2 * 1024 * 1024


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (free port); yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def new_bucket(client: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return name


def blake3_of(data: bytes) -> str:
    return f"blake3:{blake3.blake3(data).hexdigest()}"


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (so off-by-one ranges show)."""
    block = bytes((i * 31 + seed) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


async def chunked(
    data: bytes, sizes: tuple[int, ...] = (1, 7, 4096, 65536)
) -> AsyncIterator[bytes]:
    """Stream `data` in chunks of cycling, uneven sizes, with an empty chunk thrown in."""
    pos, i = 0, 0
    yield b""
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        i += 1


async def generated(total: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """`total` bytes produced on the fly (never all in memory)."""
    block = pattern(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in stream])
