"""Completion webhooks: when a job that asked for one ends, POST its final Job object to the
URL, signed the Standard Webhooks way, retried with backoff.

A batch that asked for one gets one `{"type": "batch.completed", "data": <Batch>}` when its
last job ends (the store logs that event under the batch's id; this follows it).

Delivery is best effort from the API node: the node that accepted the job (or any API node
that starts while the job is still running) follows it through the store's events and sends
the webhook once it is terminal. A job that ends while no API node runs gets none.

Signature headers (https://www.standardwebhooks.com): `webhook-id` (stable across retries),
`webhook-timestamp` (seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`, with the webhook's own `secret` or the server's webhook_secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from comfyrun.core.batch import COMPLETED_EVENT
from comfyrun.core.job import JobStatus
from comfyrun.service import JobService, JobView

log = logging.getLogger(__name__)

Render = Callable[[JobView], Awaitable[dict[str, Any]]]
#: A batch id → its wire object, for the batch.completed webhook.
RenderBatch = Callable[[str], Awaitable[dict[str, Any]]]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value."""
    key = secret.removeprefix("whsec_").encode()
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSender:
    """Follows jobs with a webhook until they end, then delivers it."""

    def __init__(
        self,
        service: JobService,
        render: Render,
        *,
        secret: str | None = None,
        attempts: int = 5,
        base_delay_s: float = 1.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._service = service
        self._render = render
        self._secret = secret
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, job_id: str, hook: dict[str, Any]) -> None:
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._follow(job_id, hook), name=f"webhook:{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def resume(self, statuses: Iterable[JobStatus]) -> int:
        """Follow the unfinished jobs that asked for a webhook (after a restart)."""
        n, cursor = 0, None
        while True:
            page = await self._service.list_jobs(statuses=list(statuses), limit=200, cursor=cursor)
            for job in page.jobs:
                hook = job.options.get("webhook")
                if isinstance(hook, dict) and hook.get("url"):
                    self.watch(job.id, hook)
                    n += 1
            cursor = page.next_cursor
            if not cursor:
                return n

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._http.aclose()

    async def _follow(self, job_id: str, hook: dict[str, Any]) -> None:
        view = await self._service.get(job_id)
        while not view.job.terminal:
            view = await self._service.wait(job_id, 3600.0)
        await self.deliver(view, hook)

    def watch_batch(self, batch_id: str, hook: dict[str, Any], render: RenderBatch) -> None:
        """Deliver the batch's `batch.completed` event to `hook` once it is logged."""
        key = f"batch:{batch_id}"
        if key in self._tasks:
            return
        task = asyncio.create_task(self._follow_batch(batch_id, hook, render), name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def resume_batches(self, render: RenderBatch) -> int:
        """Follow the unfinished batches that asked for a webhook (after a restart)."""
        n = 0
        for batch in await self._service.store.open_batches():
            hook = batch.options.get("webhook")
            if isinstance(hook, dict) and hook.get("url"):
                self.watch_batch(batch.id, hook, render)
                n += 1
        return n

    async def _follow_batch(self, batch_id: str, hook: dict[str, Any], render: RenderBatch) -> None:
        store, last = self._service.store, 0
        while True:
            events = await store.wait_for_event(batch_id, last, 3600.0)
            done = next((e for e in events if e.kind == COMPLETED_EVENT), None)
            if done is not None:
                break
            if events:
                last = events[-1].id
        body = json.dumps({"type": COMPLETED_EVENT, "data": await render(batch_id)}).encode()
        await self._post(f"batch_{batch_id}_completed", body, hook, {"batch_id": batch_id})

    async def deliver(self, view: JobView, hook: dict[str, Any]) -> bool:
        """POST the job to the hook's URL; True once a 2xx answered."""
        body = json.dumps(await self._render(view)).encode()
        msg_id = f"job_{view.job.id}_{view.job.status.value}"
        return await self._post(msg_id, body, hook, {"job_id": view.job.id})

    async def _post(
        self, msg_id: str, body: bytes, hook: dict[str, Any], about: dict[str, Any]
    ) -> bool:
        """POST `body`, signed, retried with backoff; True once a 2xx answered."""
        secret = hook.get("secret") or self._secret
        for attempt in range(1, self._attempts + 1):
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
            }
            if secret:
                headers["webhook-signature"] = sign(str(secret), msg_id, ts, body)
            try:
                resp = await self._http.post(str(hook["url"]), content=body, headers=headers)
                if resp.is_success:
                    log.info("webhook delivered", extra={"action": "webhook_delivered", **about})
                    return True
                reason = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            log.warning(
                "webhook attempt %d failed: %s",
                attempt,
                reason,
                extra={"action": "webhook_failed", **about},
            )
            if attempt < self._attempts:
                await asyncio.sleep(self._base_delay_s * 2 ** (attempt - 1))
        return False


__all__ = ["RenderBatch", "WebhookSender", "sign"]
