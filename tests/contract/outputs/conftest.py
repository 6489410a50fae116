"""The `storage` fixture: every OutputStorage implementation, each test on a fresh one.
S3 runs against moto's server mode over real HTTP (one server per session, a bucket per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.media import moto_s3_server, new_bucket, s3_client

from comfyrun.outputs import OutputStorage
from comfyrun.outputs.local import LocalOutputStorage
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.outputs.s3 import MIN_PART_SIZE, S3OutputStorage


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3(s3_endpoint: str) -> Any:
    return s3_client(s3_endpoint)


@pytest.fixture(params=["file", "memory", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OutputStorage]:
    impl: OutputStorage
    if request.param == "file":
        impl = LocalOutputStorage(tmp_path / "outputs")
    elif request.param == "memory":
        impl = MemoryOutputStorage()
    else:
        client = request.getfixturevalue("s3")
        impl = S3OutputStorage(
            new_bucket(client), "prefix/x", part_size=MIN_PART_SIZE, client=client
        )
    yield impl
    if request.param != "s3":  # the S3 client is shared by the session
        await impl.close()
