"""RunPod's and the plain API's answers with outputs too large to inline: given as URLs of
comfyrun's own download (they were left out, with only a warning on the server's side), and
the inline bytes of one answer bounded in total."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, store_output, tiny_workflow

from comfyrun.api.routes import plain_compat
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event


async def _succeed_with(ctx: Any, job_id: str, files: list[bytes]) -> None:
    await ctx.store.claim("w", 30)
    for i, data in enumerate(files):
        await store_output(ctx, job_id, f"out_{i}.png", data, "image/png", node_id="9")
    await ctx.store.transition(job_id, Event.SUCCEED, expect=JobStatus.RUNNING)


@pytest.mark.parametrize("dialect", ["runpod", "plain"])
async def test_outputs_past_the_inline_caps_are_given_as_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    monkeypatch.setattr(plain_compat, "INLINE_MAX_BYTES", 3000)
    monkeypatch.setattr(plain_compat, "INLINE_TOTAL_MAX_BYTES", 2500)
    files = [b"a" * 1000, b"b" * 1000, b"c" * 4000, b"d" * 600, b"e" * 400]
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        body = (
            {"input": {"workflow": tiny_workflow()}}
            if dialect == "runpod"
            else {"workflow": tiny_workflow()}
        )
        submitted = (await client.post("/run", json=body)).json()
        job_id = submitted.get("id") or submitted["job_id"]
        await _succeed_with(ctx, job_id, files)
        answer = (await client.get(f"/status/{job_id}")).json()
        images = answer["output" if dialect == "runpod" else "result"]["images"]
        assert [image["filename"] for image in images] == [f"out_{i}.png" for i in range(5)]
        # two inline (2,000 bytes); the third past the file cap, the fourth past what is
        # left of the answer's total (500): URLs of comfyrun's own download, with the caller's
        # key; the fifth fits in what is left
        kinds = ["base64", "base64", "s3_url", "s3_url", "base64"]
        assert [image["type"] for image in images] == kinds
        for image, data in zip(images[2:4], files[2:4], strict=True):
            assert image["data"].startswith("http://testserver/api/v2/assets/")
            fetched = await client.get(image["data"])
            assert fetched.status_code == 200 and fetched.content == data
