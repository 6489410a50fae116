"""A `?wait` whose API key is revoked while it waits answers 401, as the key's event streams
end: it used to answer the job when it ended (or after the whole wait)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun.api import key_wait
from comfyrun.job_watch import JobWatch

ADMIN = "admin-key-for-the-wait-tests"


@asynccontextmanager
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, str]]:
    """An API server (its jobs stay queued), an admin's client, a minted key's client, its id."""
    async with asgi_app(memory_settings(tmp_path, role="api", api_keys=[ADMIN])) as (_, c, _ctx):
        admin = {"Authorization": f"Bearer {ADMIN}"}
        minted = await c.post(
            "/api/v2/admin/keys", json={"name": "t", "scopes": ["submit", "read"]}, headers=admin
        )
        assert minted.status_code == 201, minted.text
        c.headers["Authorization"] = f"Bearer {minted.json()['key']}"
        transport = c._transport
        async with httpx.AsyncClient(transport=transport, base_url=c.base_url, headers=admin) as a:
            yield a, c, minted.json()["id"]


def waits_entered(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a request's wait for its job has begun (past its authentication)."""
    entered = asyncio.Event()
    wait = JobWatch.wait

    async def noted(self: Any, job_id: str, timeout: float) -> Any:
        entered.set()
        return await wait(self, job_id, timeout)

    monkeypatch.setattr(JobWatch, "wait", noted)
    return entered


def unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"


async def test_a_wait_for_a_job_that_ends_after_its_key_is_revoked_is_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = waits_entered(monkeypatch)
    async with keyed(tmp_path) as (admin, key, key_id):
        job = (await key.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).json()
        waiting = asyncio.create_task(key.get(f"/api/v2/jobs/{job['id']}", params={"wait": 30}))
        async with asyncio.timeout(10):
            await entered.wait()
            assert (await admin.delete(f"/api/v2/admin/keys/{key_id}")).status_code == 204
            ended = await admin.post(f"/api/v2/jobs/{job['id']}/cancel")
            assert ended.json()["status"] == "canceled"
            unauthorized(await waiting)


async def test_a_submission_s_wait_ends_401_within_the_recheck_once_its_key_is_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_wait, "KEY_RECHECK_S", 0.05)
    entered = waits_entered(monkeypatch)
    async with keyed(tmp_path) as (admin, key, key_id):
        body = {"workflow": tiny_workflow()}
        waiting = asyncio.create_task(key.post("/api/v2/jobs", params={"wait": 60}, json=body))
        async with asyncio.timeout(10):  # (the job never ends: nothing runs it)
            await entered.wait()
            assert (await admin.delete(f"/api/v2/admin/keys/{key_id}")).status_code == 204
            unauthorized(await waiting)
        jobs = (await admin.get("/api/v2/jobs")).json()["jobs"]
        assert [j["status"] for j in jobs] == ["queued"]  # the job itself stays
