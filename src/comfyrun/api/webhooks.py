"""The webhook delivery loop: sends what the store's outbox owes (comfyrun.core.webhook).

Every comfyrun node runs one (api, serve and worker roles alike). Each pass claims due
deliveries under a lease (so two nodes never send the same attempt at once), POSTs them and
records each attempt in the store; a failed attempt is retried with exponential backoff until
the delivery is `max_age_s` old. Nothing lives only in memory: a node killed mid-attempt leaves
a lease that runs out, and any node that runs later sends it.

Targets pass the same address check as at submission (`webhook_allow`), again before each
attempt and on the addresses the host resolves to then: a refused target is given up at once.

The body is Standard Webhooks' `{"type", "timestamp", "data"}` with the final v2 Job as data
(the v2 Batch for `batch.completed`, owed by a batch's end in the same transaction); it is fixed by the first attempt and sent unchanged by later ones, with `webhook-id` (the
delivery's id), `webhook-timestamp` (the attempt's) and, when the job's webhook or the server
has a secret, `webhook-signature`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from comfyrun.core import webhook
from comfyrun.core.job import JSON
from comfyrun.core.webhook import Attempt, Delivery
from comfyrun.errors import ComfyrunError, InputRejected
from comfyrun.inputs.fetch import Resolve, system_resolve
from comfyrun.inputs.netguard import AddressPolicy, literal_ip
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

#: The v2 Job a delivery carries, rendered from the store; None when the job is gone.
Render = Callable[[str], Awaitable[JSON | None]]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    base_delay_s: float = 1.0
    max_delay_s: float = 3600.0
    max_age_s: float = 24 * 3600.0
    timeout_s: float = 10.0
    lease_s: float = 60.0
    poll_s: float = 1.0
    batch: int = 16
    prune_after_s: float = 7 * 24 * 3600.0


class WebhookDeliverer:
    """Claims due deliveries from the store's outbox and sends them, until closed."""

    def __init__(
        self,
        store: JobStore,
        render: Render,
        *,
        render_batch: Render | None = None,
        secret: str | None = None,
        policy: DeliveryPolicy | None = None,
        holder: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        targets: AddressPolicy | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or DeliveryPolicy()
        self.holder = holder or f"webhooks-{uuid.uuid4().hex[:12]}"
        self.attempts: dict[str, int] = {"delivered": 0, "failed": 0, "given_up": 0}
        self._render = render
        self._render_batch = render_batch
        self._secret = secret
        self._targets = targets or AddressPolicy()
        self._resolve = resolve or system_resolve
        self._http = httpx.AsyncClient(
            timeout=self.policy.timeout_s, transport=transport, follow_redirects=False
        )
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="comfyrun-webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()

    async def run_once(self) -> int:
        """One pass: send every due delivery this node could claim, and wait for them; how
        many it tried. (The loop does not wait for a pass: see `_loop`.)"""
        due = await self.store.claim_deliveries(
            self.holder, self.policy.lease_s, limit=self.policy.batch
        )
        await asyncio.gather(*(self._send(d) for d in due))
        return len(due)

    async def _loop(self) -> None:
        """Up to `policy.batch` deliveries under way at once, each on its own: one that is
        slow (a receiver that answers only at the timeout) holds only its own place, and the
        places free are claimed for as soon as they are free (a pass that waited for its
        slowest delivery held every other job's webhooks up to the timeout, at every retry of
        a receiver that hangs)."""
        me = asyncio.current_task()
        sending: set[asyncio.Task[None]] = set()
        try:
            while True:
                room = self.policy.batch - len(sending)
                claimed = 0
                try:
                    if room > 0:
                        due = await self.store.claim_deliveries(
                            self.holder, self.policy.lease_s, limit=room
                        )
                        for d in due:
                            task = asyncio.create_task(self._send_logged(d))
                            sending.add(task)
                            task.add_done_callback(sending.discard)
                        claimed = len(due)
                    if not sending:
                        await self._prune()
                except ComfyrunError as exc:  # e.g. the store is down: try again later
                    log.warning(
                        "webhook pass failed: %s", exc, extra={"action": "webhook_pass_failed"}
                    )
                if me is not None and me.cancelling():
                    # a store call (asyncio.wait_for inside a pool, Python 3.11) swallowed our
                    # cancel
                    raise asyncio.CancelledError
                if claimed and claimed == room:
                    continue  # (more may be due, and places are free)
                if len(sending) >= self.policy.batch:  # full: until one is over
                    await asyncio.wait(
                        sending, timeout=self.policy.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    await asyncio.sleep(self.policy.poll_s)
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _send_logged(self, d: Delivery) -> None:
        try:
            await self._send(d)
        except ComfyrunError as exc:  # its attempt could not be recorded: its lease runs out
            log.warning(
                "webhook %s: recording its attempt failed: %s",
                d.id,
                exc,
                extra={"action": "webhook_pass_failed"},
            )
        except Exception:  # (no other delivery is held up by it: said, and left to its lease)
            log.exception("webhook %s: sending it failed", d.id)

    async def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune >= 600.0:
            self._last_prune = now
            await self.store.prune_deliveries(now - self.policy.prune_after_s)

    async def _send(self, d: Delivery) -> None:
        body = d.payload if d.payload is not None else await self._body(d)
        raw = body.encode()
        started = time.time()
        clock = time.monotonic()
        ts = int(started)
        headers = webhook.headers(d, d.secret or self._secret, ts, raw)
        refused = False
        try:
            await self._check_target(d.url)
            # the status is all that is read: the body is not (a receiver answering 500 MB
            # had it all read into memory)
            async with self._http.stream("POST", d.url, content=raw, headers=headers) as resp:
                status = resp.status_code
            attempt = Attempt(at=started, duration_s=time.monotonic() - clock, status_code=status)
        except InputRejected as exc:
            refused = True
            attempt = Attempt(at=started, duration_s=0.0, error=f"refused: {exc.message}")
        except httpx.InvalidURL as exc:  # (no HTTPError: it escaped, and stopped all sending)
            refused = True
            attempt = Attempt(at=started, duration_s=0.0, error=f"refused: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            attempt = Attempt(at=started, duration_s=time.monotonic() - clock, error=reason)
        n = len(d.attempts) + 1
        p = self.policy
        next_at = None
        if not attempt.ok and not refused:
            next_at = webhook.next_attempt_at(
                d,
                n,
                time.time(),
                base_s=p.base_delay_s,
                cap_s=p.max_delay_s,
                max_age_s=p.max_age_s,
            )
        recorded = await self.store.record_attempt(
            d.id, self.holder, attempt, next_attempt_at=next_at, payload=body
        )
        self._log(d, attempt, n, next_at, recorded is not None)

    async def _check_target(self, url: str) -> None:
        """Raise InputRejected for a target the policy forbids (as at submission), on what its
        host resolves to now; OSError when it does not resolve (a failed attempt)."""
        parts = self._targets.check_url(url, what="webhook URL")
        host = parts.hostname or ""
        if literal_ip(host) is not None or self._targets.host_is_allowed(host):
            return
        for address in await self._resolve(host, parts.port or 443):
            self._targets.check_address(address, host=host, url=url, what="webhook URL")

    async def _body(self, d: Delivery) -> str:
        batch = d.event == webhook.BATCH_COMPLETED
        render = self._render_batch if batch else self._render
        job = await render(d.job_id) if render is not None else None
        stamp = dt.datetime.fromtimestamp(d.created_at, dt.UTC).isoformat().replace("+00:00", "Z")
        payload: dict[str, Any] = {
            "type": d.event,
            "timestamp": stamp,
            "data": job if job is not None else {"id": d.job_id},
        }
        return json.dumps(payload, separators=(",", ":"))

    def _log(
        self, d: Delivery, attempt: Attempt, n: int, next_at: float | None, kept: bool
    ) -> None:
        extra = {"job_id": d.job_id, "webhook_id": d.id, "attempt": n}
        if attempt.ok:
            self.attempts["delivered"] += 1
            log.info("webhook delivered", extra={"action": "webhook_delivered", **extra})
            return
        self.attempts["failed"] += 1
        reason = attempt.error or f"HTTP {attempt.status_code}"
        if next_at is None:
            self.attempts["given_up"] += 1
            log.warning(
                "webhook given up after %d attempts: %s",
                n,
                reason,
                extra={"action": "webhook_given_up", **extra},
            )
        else:
            log.warning(
                "webhook attempt %d failed: %s; next in %.0f s",
                n,
                reason,
                next_at - time.time(),
                extra={"action": "webhook_failed", **extra},
            )
        if not kept:
            log.warning(
                "webhook lease lost before the attempt was recorded",
                extra={"action": "webhook_lease_lost", **extra},
            )


__all__ = ["DeliveryPolicy", "Render", "WebhookDeliverer"]
