"""Durable completion webhooks: what the outbox holds and the rules for sending it. Pure.

When a job that asked for a webhook reaches succeeded, failed or canceled, the store writes one
outbox entry in the same transaction as that status. Any running comfyrun node then claims due
entries under a short lease, POSTs them and records each attempt; a failed attempt is retried
after `backoff_s(attempts)` until the entry is `max_age_s` old (24 h by default), then it is
given up. The entry's id is the Standard Webhooks `webhook-id`: one per event, the same on
every attempt, so receivers can de-duplicate.

Signatures (https://www.standardwebhooks.com): `v1,<base64 HMAC-SHA256 of
"<webhook-id>.<webhook-timestamp>.<body>">`. A `whsec_<base64>` secret signs with its
decoded bytes (what the standardwebhooks libraries expect); any other secret with its UTF-8
bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from comfyrun.core.job import JSON, Job, JobStatus

#: The event each final status sends.
#: The event a batch's end owes (its deliveries carry the batch's id as `job_id`).
BATCH_COMPLETED = "batch.completed"
EVENTS: dict[JobStatus, str] = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
}


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # given up


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST: its HTTP status, or why there was none."""

    at: float
    duration_s: float
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox entry: one event of one job to one URL."""

    id: str
    job_id: str
    event: str
    url: str
    secret: str | None
    created_at: float
    next_attempt_at: float
    state: DeliveryState = DeliveryState.PENDING
    attempts: tuple[Attempt, ...] = ()
    delivered_at: float | None = None
    payload: str | None = None  # the body, fixed by the first attempt


def delivery_for(job: Job, now: float) -> Delivery | None:
    """The outbox entry `job`, just turned final, owes its webhook; None if it asked for none."""
    event = EVENTS.get(job.status)
    return _delivery(job.id, event, job.options.get("webhook"), now) if event else None


def batch_delivery_for(batch_id: str, options: JSON, now: float) -> Delivery | None:
    """The outbox entry a batch that just ended owes (`batch.completed`, under the batch's id);
    None if it asked for no webhook."""
    return _delivery(batch_id, BATCH_COMPLETED, options.get("webhook"), now)


def _delivery(about: str, event: str, hook: object, now: float) -> Delivery | None:
    if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
        return None
    secret = hook.get("secret")
    return Delivery(
        id="msg_" + uuid.uuid4().hex,
        job_id=about,
        event=event,
        url=hook["url"],
        secret=secret if isinstance(secret, str) and secret else None,
        created_at=now,
        next_attempt_at=now,
    )


def backoff_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 3600.0) -> float:
    """The wait after the `attempts`-th failed attempt: base, 2·base, 4·base … up to cap."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def next_attempt_at(
    delivery: Delivery, attempts: int, now: float, *, base_s: float, cap_s: float, max_age_s: float
) -> float | None:
    """When to try again after `attempts` failures, or None to give up (past max_age_s)."""
    at = now + backoff_s(attempts, base_s=base_s, cap_s=cap_s)
    return at if at <= delivery.created_at + max_age_s else None


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        text = secret.removeprefix("whsec_")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            return text.encode()
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value."""
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(delivery: Delivery, secret: str | None, timestamp: int, body: bytes) -> JSON:
    out: JSON = {
        "content-type": "application/json",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        out["webhook-signature"] = sign(secret, delivery.id, timestamp, body)
    return out


__all__ = [
    "BATCH_COMPLETED",
    "EVENTS",
    "Attempt",
    "Delivery",
    "DeliveryState",
    "backoff_s",
    "batch_delivery_for",
    "delivery_for",
    "headers",
    "next_attempt_at",
    "secret_bytes",
    "sign",
]
