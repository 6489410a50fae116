"""API keys and webhook deliveries to and from rows, and the pure decisions the stores share:
what an enqueue owes a key's quota and what a transition owes the key's usage and the outbox."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from comfyrun.core.job import ACTIVE, JSON, TERMINAL, Job
from comfyrun.core.tenancy import ApiKey, Quota, Scope
from comfyrun.core.webhook import Attempt, Delivery, DeliveryState, delivery_for
from comfyrun.store.codec import dump_json
from comfyrun.store.transition import Plan


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def key_to_row(key: ApiKey) -> JSON:
    return {
        "id": key.id,
        "name": key.name,
        "key_hash": key.key_hash,
        "scopes": dump_json(sorted(s.value for s in key.scopes)),
        "max_queued": key.quota.max_queued,
        "per_minute": key.quota.per_minute,
        "created_at": key.created_at,
    }


def key_from_row(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        key_hash=row["key_hash"],
        scopes=frozenset(Scope(s) for s in _json(row["scopes"]) or ()),
        quota=Quota(max_queued=row["max_queued"], per_minute=row["per_minute"]),
        created_at=float(row["created_at"]),
        revoked_at=row["revoked_at"],
        jobs_submitted=int(row["jobs_submitted"]),
        gpu_seconds=float(row["gpu_seconds"]),
        unfinished=int(row["unfinished"]),
    )


def attempt_to_dict(attempt: Attempt) -> JSON:
    return {
        "at": attempt.at,
        "duration_s": attempt.duration_s,
        "status_code": attempt.status_code,
        "error": attempt.error,
    }


def attempt_from_dict(data: Mapping[str, Any]) -> Attempt:
    return Attempt(
        at=float(data["at"]),
        duration_s=float(data.get("duration_s") or 0.0),
        status_code=data.get("status_code"),
        error=data.get("error"),
    )


def delivery_to_row(d: Delivery) -> JSON:
    return {
        "id": d.id,
        "job_id": d.job_id,
        "event": d.event,
        "url": d.url,
        "secret": d.secret,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
    }


def delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=row["id"],
        job_id=row["job_id"],
        event=row["event"],
        url=row["url"],
        secret=row["secret"],
        created_at=float(row["created_at"]),
        next_attempt_at=float(row["next_attempt_at"]),
        state=DeliveryState(row["state"]),
        attempts=tuple(attempt_from_dict(a) for a in _json(row["attempts"]) or ()),
        delivered_at=row["delivered_at"],
        payload=row["payload"],
    )


def attempt_outcome(
    attempt: Attempt, next_attempt_at: float | None
) -> tuple[DeliveryState, float | None]:
    """(the delivery's state after `attempt`, delivered_at)."""
    if attempt.ok:
        return DeliveryState.DELIVERED, attempt.at
    if next_attempt_at is None:
        return DeliveryState.FAILED, None
    return DeliveryState.PENDING, None


def takes_off(p: Plan) -> bool:
    """`p` takes a job off its backend: the time it held it since its start is owed to its key
    (the job's `started_at`, as `p` leaves it)."""
    return p.previous in ACTIVE and p.status not in ACTIVE


def plan_ends(p: Plan) -> bool:
    """`p` ends its job (an owned one's key's unfinished count drops): into a final status
    from one that is not (a finished job's expiry ended nothing: it was counted out at its
    end)."""
    return p.changes_status and p.status in TERMINAL and p.previous not in TERMINAL


def run_seconds(job: Job, p: Plan, now: float) -> float | None:
    """The time an owned job held its backend, owed to its key when `p` took it off; None when
    `p` owes nothing."""
    if job.owner is None or not takes_off(p) or job.started_at is None:
        return None
    return max(0.0, now - job.started_at)


def ends(job: Job, p: Plan) -> bool:
    """`p` ends an owned job (its key's unfinished count drops)."""
    return job.owner is not None and plan_ends(p)


def owed_delivery(job: Job, p: Plan, now: float) -> Delivery | None:
    """The outbox entry `p` owes (a final status of a job that asked for a webhook)."""
    if not p.changes_status:
        return None
    return delivery_for(job, now)


__all__ = [
    "attempt_from_dict",
    "attempt_outcome",
    "attempt_to_dict",
    "delivery_from_row",
    "delivery_to_row",
    "ends",
    "key_from_row",
    "key_to_row",
    "owed_delivery",
    "plan_ends",
    "run_seconds",
    "takes_off",
]
