"""The `batch.completed` webhook: when a batch that asked for one ends, POST
`{"type": "batch.completed", "data": <Batch>}` to its URL, signed the Standard Webhooks way
(comfyrun.core.webhook.sign), retried with backoff.

The store logs the event under the batch's id in the transaction that ends its last job; an API
node follows that log (and, after a restart, every unfinished batch that asked for a webhook).
Unlike job webhooks this is not yet in the durable outbox: a batch that ends while no API node
runs gets its webhook when one starts again, and an attempt cut off by a crash is not resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from comfyrun.core.batch import COMPLETED_EVENT
from comfyrun.core.webhook import sign
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

#: A batch id → its wire object.
RenderBatch = Callable[[str], Awaitable[dict[str, Any]]]


class BatchWebhookSender:
    """Follows batches with a webhook until they end, then delivers `batch.completed`."""

    def __init__(
        self,
        store: JobStore,
        *,
        secret: str | None = None,
        attempts: int = 5,
        base_delay_s: float = 1.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._store = store
        self._secret = secret
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._tasks: dict[str, asyncio.Task[None]] = {}

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
        for batch in await self._store.open_batches():
            hook = batch.options.get("webhook")
            if isinstance(hook, dict) and hook.get("url"):
                self.watch_batch(batch.id, hook, render)
                n += 1
        return n

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._http.aclose()

    async def _follow_batch(self, batch_id: str, hook: dict[str, Any], render: RenderBatch) -> None:
        last = 0
        while True:
            events = await self._store.wait_for_event(batch_id, last, 3600.0)
            if any(e.kind == COMPLETED_EVENT for e in events):
                break
            if events:
                last = events[-1].id
        body = json.dumps({"type": COMPLETED_EVENT, "data": await render(batch_id)}).encode()
        await self._post(f"batch_{batch_id}_completed", body, hook, {"batch_id": batch_id})

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


__all__ = ["BatchWebhookSender", "RenderBatch"]
