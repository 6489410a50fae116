"""A real S3-compatible server (moto's server mode) for the S3 storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.media import moto_s3_server, s3_client


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3(s3_endpoint: str) -> Any:
    return s3_client(s3_endpoint)
