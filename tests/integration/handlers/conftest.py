"""Helpers for handler jobs: PNG inputs, and reading a job's stored outputs back."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from tests.support import handlers as test_handlers

from comfyrun.api.context import AppContext


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (33, 21)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_input(name: str, color: tuple[int, int, int] = (200, 30, 30)) -> dict[str, Any]:
    return {"name": name, "data": base64.b64encode(png_bytes(color)).decode()}


async def output_bytes(ctx: AppContext, output: dict[str, Any], job_id: str) -> bytes:
    """An output's stored bytes (the job's record names its storage key)."""
    job = await ctx.store.get(job_id)
    assert job is not None and ctx.storage is not None
    key = next(o.storage_key for o in job.outputs if o.name == output["name"])
    assert key is not None
    return b"".join([chunk async for chunk in ctx.storage.open(key)])


@pytest.fixture(autouse=True)
def fresh_test_handlers() -> Iterator[None]:
    test_handlers.reset()
    yield
    test_handlers.reset()
