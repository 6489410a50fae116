"""Durable webhooks: a job ends while its receiver is down, every comfyrun process (an API node
and a worker on one PostgreSQL database) is killed with SIGKILL, the receiver comes up, and a
restarted node delivers the webhook, signed so the `standardwebhooks` package verifies it,
with the id it had before the kill."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from tests.acceptance.conftest import StartServer
from tests.support.emulator import image_workflow

from comfyrun.client import ComfyrunClient

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()

#: Fast retries and short leases, so the test needs seconds, not minutes.
ENV = {
    "COMFYRUN_WEBHOOK_ALLOW": "127.0.0.1",
    "COMFYRUN_WEBHOOK_SECRET": SECRET,
    "COMFYRUN_WEBHOOK_RETRY_BASE_S": "0.2",
    "COMFYRUN_WEBHOOK_RETRY_MAX_DELAY_S": "1",
    "COMFYRUN_WEBHOOK_TIMEOUT_S": "2",
    "COMFYRUN_WEBHOOK_POLL_S": "0.2",
    "COMFYRUN_EMULATOR_STEP_TIME_S": "0",
}


class Receiver:
    """A webhook receiver on a socket that is bound from the start but only listens once
    `start()` runs: until then, connections to it are refused (the receiver is down)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        self.got.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    yield rec
    await rec.close()


async def attempted(client: ComfyrunClient, job_id: str, n: int) -> dict[str, Any]:
    """The job's delivery once it has `n` failed attempts (other processes' work: polled)."""
    for _ in range(600):
        [delivery] = await client.webhooks(job_id) or [None]
        if delivery is not None and len(delivery["attempts"]) >= n:
            return dict(delivery)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {n} attempts at the webhook of {job_id}")


async def test_webhook_survives_kill_9_of_every_node(
    start_server: StartServer, tmp_path: Path, pg_url: str, receiver: Receiver
) -> None:
    outputs = (tmp_path / "outputs").as_uri()
    common = ("--db", pg_url, "--outputs", outputs)
    api = start_server("api", *common, env=ENV)
    worker = start_server(
        "worker", *common, "--emulator", "1", "--data-dir", str(tmp_path / "w"), env=ENV
    )
    async with ComfyrunClient(api.url, timeout=60) as client:
        job = await client.submit(image_workflow(size=8), webhook={"url": receiver.url})
        done = await client.wait(job["id"], timeout=120)
        assert done["status"] == "succeeded"
        before = await attempted(client, job["id"], 2)  # the receiver refused twice
    assert before["state"] == "pending" and before["event"] == "job.succeeded"
    assert all(a["status_code"] is None and a["error"] for a in before["attempts"])

    for node in (api, worker):
        node.kill(signal.SIGKILL)
    await receiver.start()
    assert not receiver.calls

    # both restarted (off this loop, which serves the receiver): each runs a delivery loop
    again = await asyncio.to_thread(start_server, "api", *common, env=ENV)
    await asyncio.to_thread(
        start_server, "worker", *common, "--emulator", "1", "--data-dir", str(tmp_path / "w"),
        env=ENV,
    )  # fmt: skip
    await asyncio.wait_for(receiver.got.wait(), 120)
    headers, body = receiver.calls[0]
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "succeeded"
    assert payload["data"]["outputs"]
    assert headers["webhook-id"] == before["id"]  # one id per event, whoever sends it
    async with ComfyrunClient(again.url, timeout=60) as client:
        for _ in range(600):
            [after] = await client.webhooks(job["id"])
            if after["state"] == "delivered":
                break
            await asyncio.sleep(0.1)
        assert after["state"] == "delivered", after
        assert after["attempts"][-1]["status_code"] == 204
        assert len(after["attempts"]) >= 3
        metrics = await client._http.get("/metrics")
        assert 'comfyrun_webhook_deliveries{state="delivered"} 1.0' in metrics.text
    # at least once: any re-send (an attempt that timed out after the receiver had the
    # request) is the same event, with the same id and body, for the receiver to drop
    assert {(h["webhook-id"], b) for h, b in receiver.calls} == {(before["id"], body)}
