"""Completion webhooks over real HTTP: signed (Standard Webhooks), retried, SSRF-guarded,
every attempt visible on the job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import image_workflow

from comfyrun.cli.server import running_server
from comfyrun.client import ComfyrunAPIError, ComfyrunClient


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.got = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=500)
        self.got.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(fail_first=1)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


async def recorded(client: ComfyrunClient, job_id: str) -> list[dict[str, Any]]:
    """The job's deliveries once none is pending (the server records an attempt after the
    receiver answered it)."""
    for _ in range(600):
        deliveries = await client.webhooks(job_id)
        if deliveries and all(d["state"] != "pending" for d in deliveries):
            return deliveries
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries still pending: {deliveries}")


async def test_webhook_is_signed_retried_and_carries_the_final_job(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = memory_settings(
        tmp_path,
        port=0,
        emulators=1,
        emulator_mode="inprocess",
        webhook_allow=["127.0.0.1"],
        webhook_secret="whsec_dGVzdA",
        webhook_retry_base_s=0.05,
        webhook_poll_s=0.05,
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        async with ComfyrunClient(url) as client:
            job = await client.submit(image_workflow(prefix="hook"), webhook={"url": receiver.url})
            await asyncio.wait_for(receiver.got.wait(), 60)
            [delivery] = await recorded(client, job["id"])
    assert len(receiver.calls) == 2  # the first answer was a 500
    headers, body = receiver.calls[-1]
    payload: dict[str, Any] = Webhook("whsec_dGVzdA").verify(body, headers)
    assert payload["type"] == "job.succeeded"
    data = payload["data"]
    assert data["id"] == job["id"] and data["status"] == "succeeded"
    assert data["outputs"][0]["name"].startswith("hook_")
    assert receiver.calls[0][0]["webhook-id"] == headers["webhook-id"]  # stable across retries
    assert receiver.calls[0][1] == body  # the same body on every attempt
    assert delivery["id"] == headers["webhook-id"] and delivery["event"] == "job.succeeded"
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 204]


async def test_private_webhook_targets_are_refused_by_default(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, port=0, role="api")
    async with running_server(settings) as url, ComfyrunClient(url) as client:
        with pytest.raises(ComfyrunAPIError) as err:
            await client.submit(image_workflow(), webhook={"url": "http://127.0.0.1:9/x"})
        assert err.value.status == 422 and err.value.code == "input_rejected"
        assert "webhook URL" in str(err.value)
        # a URL that no call could use (a line break in it) is refused too, not kept to fail
        # at every delivery
        with pytest.raises(ComfyrunAPIError) as err:
            await client.submit(image_workflow(), webhook={"url": "http://a\r\nb.example/"})
        assert err.value.status == 422 and err.value.code == "input_rejected"
