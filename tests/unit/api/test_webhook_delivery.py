"""The delivery loop over the memory store and an httpx MockTransport: retries with the same
id and body, records every attempt, gives up at max_age, and announces a job deleted before
its webhook went out."""

from __future__ import annotations

import json

import httpx
import pytest
from tests.support.store import new_job

from comfyrun.api.webhooks import DeliveryPolicy, WebhookDeliverer
from comfyrun.core.job import JSON, JobStatus
from comfyrun.core.state import Event
from comfyrun.core.webhook import DeliveryState
from comfyrun.store.memory import MemoryStore

HOOK = {"webhook": {"url": "https://hooks.example/x", "secret": "whsec_dGVzdA"}}


async def finished_job(store: MemoryStore) -> str:
    job, _ = await store.enqueue(new_job(options=HOOK))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    return job.id


async def render(job_id: str) -> JSON:
    return {"id": job_id, "status": "succeeded"}


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


async def test_retries_keep_id_and_body_until_a_2xx(store: MemoryStore) -> None:
    job_id = await finished_job(store)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) < 3 else 200)

    policy = DeliveryPolicy(base_delay_s=1e-6, max_delay_s=1e-6)
    deliverer = WebhookDeliverer(
        store, render, policy=policy, transport=httpx.MockTransport(answer)
    )
    try:
        for _ in range(3):
            assert await deliverer.run_once() == 1
        assert await deliverer.run_once() == 0
    finally:
        await deliverer.close()
    assert len({r.headers["webhook-id"] for r in seen}) == 1
    assert len({r.content for r in seen}) == 1
    body = json.loads(seen[0].content)
    assert body["type"] == "job.succeeded" and body["data"] == await render(job_id)
    [d] = await store.deliveries(job_id)
    assert d.state is DeliveryState.DELIVERED
    assert [a.status_code for a in d.attempts] == [503, 503, 200]
    assert deliverer.attempts == {"delivered": 1, "failed": 2, "given_up": 0}


async def test_a_receiver_down_past_max_age_is_given_up(store: MemoryStore) -> None:
    job_id = await finished_job(store)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    policy = DeliveryPolicy(base_delay_s=3600.0, max_age_s=60.0)
    deliverer = WebhookDeliverer(
        store, render, policy=policy, transport=httpx.MockTransport(refuse)
    )
    try:
        assert await deliverer.run_once() == 1
    finally:
        await deliverer.close()
    [d] = await store.deliveries(job_id)
    assert d.state is DeliveryState.FAILED
    assert d.attempts[0].error == "connection refused" and d.attempts[0].status_code is None
    assert deliverer.attempts["given_up"] == 1


async def test_a_deleted_job_is_still_announced(store: MemoryStore) -> None:
    job_id = await finished_job(store)
    await store.delete(job_id)
    bodies: list[JSON] = []

    def ok(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(204)

    async def gone(job_id: str) -> JSON | None:
        return None

    deliverer = WebhookDeliverer(store, gone, transport=httpx.MockTransport(ok))
    try:
        assert await deliverer.run_once() == 1
    finally:
        await deliverer.close()
    assert bodies[0]["data"] == {"id": job_id}
