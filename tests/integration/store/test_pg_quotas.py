"""Quotas hold under concurrent submissions spread over two API nodes sharing one PostgreSQL
database: the key's row is locked in the enqueue's transaction, so exactly the quota's worth
of jobs is accepted and every other submission gets 429 with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from tests.support.api import tiny_workflow
from tests.support.store import drop_schema, new_schema_name, require_pg, store_url

from comfyrun.api.app import create_app
from comfyrun.config import Settings
from comfyrun.outputs.memory import MemoryOutputStorage

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API nodes (role api: nothing runs, so submitted jobs stay queued) on one schema."""
    require_pg()
    schema = new_schema_name()
    url = store_url("postgres", tmp_path, schema)
    try:
        async with AsyncExitStack() as stack:
            clients = []
            for i in range(2):
                settings = Settings(
                    data_dir=tmp_path / f"n{i}",
                    db_url=url,
                    role="api",
                    api_keys=["admin-secret"],
                    queue_max=None,
                )
                app = create_app(settings, storage=MemoryOutputStorage())
                await stack.enter_async_context(app.router.lifespan_context(app))
                transport = httpx.ASGITransport(app=app)
                clients.append(
                    await stack.enter_async_context(
                        httpx.AsyncClient(transport=transport, base_url=f"http://node{i}")
                    )
                )
            yield clients
    finally:
        drop_schema(schema)


async def submit_many(nodes: list[httpx.AsyncClient], key: str, n: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}

    async def one(i: int) -> httpx.Response:
        body = {"workflow": tiny_workflow(color=i)}
        return await nodes[i % 2].post("/api/v2/jobs", json=body, headers=headers)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def mint(node: httpx.AsyncClient, quota: dict[str, int]) -> dict[str, str]:
    body = {"name": "burst", "scopes": ["submit", "read"], "quota": quota}
    answer = await node.post("/api/v2/admin/keys", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    key: dict[str, str] = answer.json()
    return key


async def test_max_queued_holds_across_two_nodes(nodes: list[httpx.AsyncClient]) -> None:
    key = await mint(nodes[0], {"max_queued": 5})
    answers = await submit_many(nodes, key["key"], 40)
    accepted = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code == 429]
    assert len(accepted) == 5 and len(refused) == 35, [a.status_code for a in answers]
    for answer in refused:
        assert answer.json()["error"]["code"] == "quota_exceeded"
        assert int(answer.headers["Retry-After"]) >= 1
    listed = await nodes[1].get("/api/v2/jobs", headers={"Authorization": f"Bearer {key['key']}"})
    assert len(listed.json()["jobs"]) == 5
    usage = (await nodes[1].get(f"/api/v2/admin/keys/{key['id']}", headers=ADMIN)).json()
    assert usage["usage"]["jobs"] == 5


async def test_per_minute_holds_across_two_nodes(nodes: list[httpx.AsyncClient]) -> None:
    key = await mint(nodes[1], {"per_minute": 7})
    answers = await submit_many(nodes, key["key"], 30)
    assert sum(a.status_code == 201 for a in answers) == 7, [a.status_code for a in answers]
    waits = [int(a.headers["Retry-After"]) for a in answers if a.status_code == 429]
    assert len(waits) == 23 and all(1 <= w <= 60 for w in waits)
    metrics = (await nodes[0].get("/metrics", headers=ADMIN)).text
    assert f'comfyrun_key_jobs_submitted{{key_id="{key["id"]}",key_name="burst"}} 7.0' in metrics
