"""A job's client `metadata` is bounded (`metadata_max_bytes` of compact JSON), in every route
that takes it: it was bounded only by the body's limit, and sent back in every view of the job."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.support.api import asgi_app, memory_settings, tiny_workflow

LIMIT = 64


def refused(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith("body.metadata:")
    assert f"at most {LIMIT}" in error["message"]


async def test_metadata_past_its_bound_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    settings = memory_settings(
        tmp_path, role="api", metadata_max_bytes=LIMIT, workflows_dir=tmp_path / "workflows"
    )
    async with asgi_app(settings) as (_, client, ctx):
        big = {"note": "x" * LIMIT}
        refused(
            await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(), "metadata": big})
        )
        refused(await client.post("/api/v2/workflows/t2i/jobs", json={"metadata": big}))
        refused(await client.post("/api/v2/batches", json={"workflow": "t2i", "metadata": big}))
        assert await ctx.store.counts() == dict.fromkeys(await ctx.store.counts(), 0)
        fits = {"note": "x" * (LIMIT - len('{"note":""}'))}  # exactly the bound
        r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(), "metadata": fits})
        assert r.status_code == 201 and r.json()["metadata"] == fits
