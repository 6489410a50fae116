"""RunPod's POST /purge-queue over an in-memory store: it cancels the jobs queued when it began,
page after page, and a job it cannot cancel is passed over, not tried again forever."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun import errors


async def test_purge_passes_over_a_job_it_cannot_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, ctx):
        ids = []
        for color in range(3):
            r = await client.post("/run", json={"input": {"workflow": tiny_workflow(color)}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        stuck = ids[1]
        cancel = type(ctx.service).cancel

        async def failing(self: Any, job_id: str) -> Any:
            if job_id == stuck:
                raise errors.StoreError("the store is failing for this one")
            return await cancel(self, job_id)

        monkeypatch.setattr(type(ctx.service), "cancel", failing)
        async with asyncio.timeout(10):  # the old loop read the same page again forever
            purged = (await client.post("/purge-queue")).json()
        assert purged == {"removed": 2, "status": "completed"}
        statuses = [(await client.get(f"/status/{i}")).json()["status"] for i in ids]
        assert statuses == ["CANCELLED", "IN_QUEUE", "CANCELLED"]
