"""POST /api/v2/backends/{name}/{drain,resume,restart,stop,start}: admin only, 404 for a name
no backend has, 409 for what makes no sense; served by `serve` and by a worker's HTTP port, and
refused with 409 by an `api` node (its workers run the backends). Emulated backends (URL ones,
in this process); the managed cases are in tests/unit/dispatch/test_backend_control.py and
tests/integration/dispatch/test_managed_backend_ops.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from tests.support.api import asgi_app, memory_settings, tiny_workflow
from tests.support.engine import until

from comfyrun.core.job import JobStatus

ADMIN = {"Authorization": "Bearer s3cret"}


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"]["code"] == code, body
    return body


async def test_an_admin_drains_and_resumes_a_backend_others_may_not(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path, api_keys=["s3cret"], emulators=2, emulator_mode="inprocess"
    )
    async with asgi_app(settings) as (_, client, ctx):
        assert await ctx.pool.wait_ready(10)
        minted = await client.post(
            "/api/v2/admin/keys", json={"name": "acme", "scopes": ["read", "submit"]}, headers=ADMIN
        )
        acme = {"Authorization": f"Bearer {minted.json()['key']}"}
        assert_envelope(await client.post("/api/v2/backends/emulator-1/drain"), 401, "unauthorized")
        denied = await client.post("/api/v2/backends/emulator-1/drain", headers=acme)
        assert_envelope(denied, 403, "forbidden")
        assert not ctx.pool.get("emulator-1").draining  # refused: nothing changed

        r = await client.post("/api/v2/backends/emulator-1/drain", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "emulator-1" and r.json()["state"] == "draining"
        assert r.json()["draining"] is True and r.json()["kept_stopped"] is False
        listed = {
            b["name"]: b
            for b in (await client.get("/api/v2/backends", headers=acme)).json()["backends"]
        }
        assert listed["emulator-1"]["state"] == "draining" and listed["emulator-1"]["draining"]
        assert listed["emulator-2"]["state"] == "ready" and not listed["emulator-2"]["draining"]
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert 'comfyrun_backend_state{backend="emulator-1",state="draining"} 1.0' in metrics
        assert 'comfyrun_backend_held{backend="emulator-1",hold="draining"} 1.0' in metrics
        assert 'comfyrun_backend_held{backend="emulator-2",hold="draining"} 0.0' in metrics

        # every job goes to the other backend meanwhile
        for color in range(3):
            sent = await client.post(
                "/api/v2/jobs?wait=30", json={"workflow": tiny_workflow(color)}, headers=acme
            )
            assert sent.json()["status"] == JobStatus.SUCCEEDED.value, sent.text
            assert sent.json()["backend"] == "emulator-2"

        r = await client.post("/api/v2/backends/emulator-1/resume", headers=ADMIN)
        assert r.status_code == 200 and r.json()["state"] == "ready" and not r.json()["draining"]


async def test_unknown_names_and_senseless_operations_are_refused(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path, api_keys=["s3cret"], emulators=1, emulator_mode="inprocess"
    )
    async with asgi_app(settings) as (_, client, ctx):
        assert await ctx.pool.wait_ready(10)
        missing = await client.post("/api/v2/backends/nope/drain", headers=ADMIN)
        body = assert_envelope(missing, 404, "not_found")
        assert "emulator-1" in body["error"]["message"]
        start = await client.post("/api/v2/backends/emulator-1/start", headers=ADMIN)
        assert "not managed" in assert_envelope(start, 409, "conflict")["error"]["message"]
        # a URL backend has no process: stop drains it, restart reconnects to it
        stopped = await client.post("/api/v2/backends/emulator-1/stop", headers=ADMIN)
        assert stopped.json()["state"] == "draining" and not stopped.json()["kept_stopped"]
        await client.post("/api/v2/backends/emulator-1/resume", headers=ADMIN)
        # resumed, it has room: the dispatcher's claim (finding no job) holds it a moment, which
        # a forced restart of a URL backend would count as a prompt it cannot cut short
        await until(lambda: ctx.pool.get("emulator-1").inflight == 0)
        r = await client.post("/api/v2/backends/emulator-1/restart?force=true", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert await ctx.pool.wait_ready(10)
        sent = await client.post(
            "/api/v2/jobs?wait=30", json={"workflow": tiny_workflow()}, headers=ADMIN
        )
        assert sent.json()["status"] == JobStatus.SUCCEEDED.value, sent.text


async def test_a_workers_port_serves_the_operations_and_an_api_node_says_where(
    tmp_path: Path,
) -> None:
    worker = memory_settings(
        tmp_path / "w", api_keys=["s3cret"], emulators=1, emulator_mode="inprocess", role="worker"
    )
    async with asgi_app(worker) as (_, client, ctx):
        assert await ctx.pool.wait_ready(10)
        assert_envelope(await client.post("/api/v2/backends/emulator-1/drain"), 401, "unauthorized")
        r = await client.post("/api/v2/backends/emulator-1/drain", headers=ADMIN)
        assert r.status_code == 200 and r.json()["state"] == "draining"
        listed = (await client.get("/api/v2/backends", headers=ADMIN)).json()["backends"]
        assert [b["state"] for b in listed] == ["draining"]
    api = memory_settings(tmp_path / "a", api_keys=["s3cret"], role="api")
    async with asgi_app(api) as (_, client, _ctx):
        r = await client.post("/api/v2/backends/emulator-1/drain", headers=ADMIN)
        message = assert_envelope(r, 409, "conflict")["error"]["message"]
        assert "worker" in message


async def test_metrics_count_the_prompts_stopped_on_a_backend_that_came_back(
    tmp_path: Path,
) -> None:
    settings = memory_settings(
        tmp_path, api_keys=["s3cret"], emulators=1, emulator_mode="inprocess"
    )
    async with asgi_app(settings) as (_, client, ctx):
        assert ctx.pool is not None
        [backend] = ctx.pool.backends
        name = f'comfyrun_backend_stale_prompts_stopped_total{{backend="{backend.name}"}}'
        assert f"{name} 0.0" in (await client.get("/metrics", headers=ADMIN)).text
        backend.stale_prompts_stopped = 2  # dispatch.stale_prompts.ReturnCheck counts there
        assert f"{name} 2.0" in (await client.get("/metrics", headers=ADMIN)).text
        backend.stale_prompts_stopped = 3
        assert f"{name} 3.0" in (await client.get("/metrics", headers=ADMIN)).text


async def test_holds_survive_a_restart_of_the_process_each_worker_slot_its_own(
    tmp_path: Path,
) -> None:
    """Two processes share a data dir (two worker slots): each keeps its own holds, and gets
    them back when restarted (taking its slot back)."""
    settings = memory_settings(
        tmp_path, api_keys=["s3cret"], emulators=2, emulator_mode="inprocess"
    )

    async def held(client: httpx.AsyncClient) -> list[str]:
        listed = (await client.get("/api/v2/backends", headers=ADMIN)).json()["backends"]
        return [b["name"] for b in listed if b["draining"]]

    async with asgi_app(settings) as (_, one, one_ctx), asgi_app(settings) as (_, two, two_ctx):
        assert one_ctx.dispatcher.worker_id != two_ctx.dispatcher.worker_id
        r = await one.post("/api/v2/backends/emulator-1/drain", headers=ADMIN)
        assert r.status_code == 200, r.text
        r = await two.post("/api/v2/backends/emulator-2/stop", headers=ADMIN)  # a URL: drained
        assert r.status_code == 200, r.text
        assert await held(one) == ["emulator-1"] and await held(two) == ["emulator-2"]

    async with asgi_app(settings) as (_, one, one_ctx), asgi_app(settings) as (_, two, _ctx):
        assert await held(one) == ["emulator-1"] and await held(two) == ["emulator-2"]
        assert await one_ctx.pool.wait_ready(10)
        sent = await one.post(
            "/api/v2/jobs?wait=30", json={"workflow": tiny_workflow()}, headers=ADMIN
        )
        assert sent.json()["status"] == JobStatus.SUCCEEDED.value, sent.text
        assert sent.json()["backend"] == "emulator-2"
        r = await one.post("/api/v2/backends/emulator-1/resume", headers=ADMIN)
        assert r.status_code == 200 and not r.json()["draining"]

    async with asgi_app(settings) as (_, one, _ctx):
        assert await held(one) == []
