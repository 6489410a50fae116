"""The delivery loop over the memory store and an httpx MockTransport: retries with the same
id and body, records every attempt, gives up at max_age, and announces a job deleted before
its webhook went out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.store import new_job

from comfyrun.api.webhooks import DeliveryPolicy, WebhookDeliverer
from comfyrun.core.job import JSON, JobStatus
from comfyrun.core.state import Event
from comfyrun.core.webhook import DeliveryState
from comfyrun.inputs.netguard import AddressPolicy
from comfyrun.store.memory import MemoryStore

HOOK = {"webhook": {"url": "https://hooks.example/x", "secret": "whsec_dGVzdA"}}


async def finished_job(store: MemoryStore) -> str:
    job, _ = await store.enqueue(new_job(options=HOOK))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    return job.id


async def public(host: str, port: int) -> list[str]:
    """A resolver that says every name is a public address (these tests have no DNS)."""
    return ["93.184.216.34"]


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
        store, render, policy=policy, transport=httpx.MockTransport(answer), resolve=public
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
        store, render, policy=policy, transport=httpx.MockTransport(refuse), resolve=public
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

    deliverer = WebhookDeliverer(store, gone, transport=httpx.MockTransport(ok), resolve=public)
    try:
        assert await deliverer.run_once() == 1
    finally:
        await deliverer.close()
    assert bodies[0]["data"] == {"id": job_id}


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("http://127.0.0.1:9/x", []),
        ("http://0x7f000001/x", []),
        ("http://localhost/x", []),
        ("https://rebound.example/x", ["10.0.0.7"]),  # public at submission, private now
    ],
)
async def test_a_private_target_is_refused_and_given_up_without_a_request(
    store: MemoryStore, url: str, resolved: list[str]
) -> None:
    job, _ = await store.enqueue(new_job(options={"webhook": {"url": url}}))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    sent: list[httpx.Request] = []

    async def resolve(host: str, port: int) -> list[str]:
        return resolved

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    deliverer = WebhookDeliverer(
        store, render, transport=httpx.MockTransport(record), resolve=resolve
    )
    try:
        assert await deliverer.run_once() == 1
    finally:
        await deliverer.close()
    [d] = await store.deliveries(job.id)
    assert d.state is DeliveryState.FAILED and not sent
    assert d.attempts[0].error is not None and d.attempts[0].error.startswith("refused")


async def test_allowed_private_targets_are_sent(store: MemoryStore) -> None:
    job, _ = await store.enqueue(new_job(options={"webhook": {"url": "http://10.1.2.3/x"}}))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    deliverer = WebhookDeliverer(
        store,
        render,
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        targets=AddressPolicy.from_entries(["10.0.0.0/8"]),
    )
    try:
        assert await deliverer.run_once() == 1
    finally:
        await deliverer.close()
    assert [d.state for d in await store.deliveries(job.id)] == [DeliveryState.DELIVERED]


async def test_a_hanging_receiver_holds_up_no_other_webhook(store: MemoryStore) -> None:
    """The loop keeps sending while one delivery hangs: a pass waited for all of its own,
    so webhooks due meanwhile waited for the hanging one's timeout, at each of its retries."""
    hang = {"webhook": {"url": "https://hangs.example/x"}}
    hung = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hangs.example":
            hung.set()
            await asyncio.Event().wait()  # (until the loop is closed)
        return httpx.Response(200)

    job, _ = await store.enqueue(new_job(options=hang))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    policy = DeliveryPolicy(poll_s=0.02)
    deliverer = WebhookDeliverer(
        store, render, policy=policy, transport=httpx.MockTransport(answer), resolve=public
    )
    deliverer.start()
    try:
        async with asyncio.timeout(5):
            await hung.wait()
            later = [await finished_job(store) for _ in range(3)]  # due while it hangs
            while True:
                states = [d.state for j in later for d in await store.deliveries(j)]
                if states == [DeliveryState.DELIVERED] * 3:
                    break
                await asyncio.sleep(0.02)
    finally:
        await deliverer.close()


async def test_a_receiver_s_answer_body_is_not_read(store: MemoryStore) -> None:
    """Only its status counts: a receiver answering 500 MB had it all read into memory."""
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(1000):
            read += 1
            yield b"x" * (1 << 20)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(body()))

    job_id = await finished_job(store)
    assert await passes(store, answer, 1) == [1]
    [d] = await store.deliveries(job_id)
    assert d.state is DeliveryState.DELIVERED and read <= 1


async def passes(store: MemoryStore, answer: Any, n: int) -> list[int]:
    """`n` passes of a deliverer whose receivers `answer`; how many each tried."""
    deliverer = WebhookDeliverer(
        store, render, transport=httpx.MockTransport(answer), resolve=public
    )
    try:
        return [await deliverer.run_once() for _ in range(n)]
    finally:
        await deliverer.close()


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            yield chunk


async def test_a_url_httpx_cannot_send_to_is_given_up_and_the_rest_go_on(
    store: MemoryStore,
) -> None:
    """(a URL past httpx's length limit raised InvalidURL, no HTTPError: it escaped the
    delivery, and no webhook of the node was sent after it; submissions refuse such URLs)"""
    long_hook = {"webhook": {"url": "https://hooks.example/" + "a" * 70000}}
    job, _ = await store.enqueue(new_job(options=long_hook))
    await store.claim("w", 30)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    sent: list[str] = []

    def ok(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200)

    assert await passes(store, ok, 1) == [1]
    later = await finished_job(store)
    assert await passes(store, ok, 1) == [1]
    [given_up] = await store.deliveries(job.id)
    assert given_up.state is DeliveryState.FAILED  # given up
    assert given_up.attempts[0].error is not None and "refused" in given_up.attempts[0].error
    [d] = await store.deliveries(later)
    assert d.state is DeliveryState.DELIVERED and sent == ["https://hooks.example/x"]
