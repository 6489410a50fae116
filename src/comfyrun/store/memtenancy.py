"""The memory store's API keys, quotas and webhook outbox (mixed into MemoryStore); the same
semantics as the SQL stores'. Each method runs without awaiting, so it is atomic."""

from __future__ import annotations

import builtins
import dataclasses
import time

from comfyrun.core.job import Job, NewJob
from comfyrun.core.tenancy import QUOTA_WINDOW_S, ApiKey, quota_retry_after
from comfyrun.core.webhook import Attempt, Delivery, DeliveryState
from comfyrun.errors import Conflict, QuotaExceeded
from comfyrun.store import tenancy
from comfyrun.store.transition import Plan


class MemoryTenancy:
    _jobs: dict[str, Job]

    def __init__(self) -> None:
        self._api_keys: dict[str, ApiKey] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    # -- API keys ----------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        if key.id in self._api_keys or any(
            k.key_hash == key.key_hash for k in self._api_keys.values()
        ):
            raise Conflict(f"key {key.id} already exists", details={"key_id": key.id})
        self._api_keys[key.id] = dataclasses.replace(
            key, revoked_at=None, jobs_submitted=0, gpu_seconds=0.0, unfinished=0
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return self._api_keys.get(key_id)

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._api_keys.values() if k.key_hash == key_hash), None)

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        return sorted(self._api_keys.values(), key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, *, now: float | None = None) -> bool:
        key = self._api_keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._api_keys[key_id] = dataclasses.replace(
            key, revoked_at=time.time() if now is None else now
        )
        return True

    def _admit(self, new: NewJob, now: float, *, count: int = 1) -> None:
        """`new` (and `count` - 1 more jobs of its owner: a batch's) must fit the owner key's
        quota, all of them or none; they are counted."""
        key = self._api_keys.get(new.owner) if new.owner is not None else None
        if key is None:
            return
        quota = key.quota
        if quota.max_queued is not None or quota.per_minute is not None:
            owned = [j for j in self._jobs.values() if j.owner == key.id]
            recent = sorted(
                (j.created_at for j in owned if j.created_at > now - QUOTA_WINDOW_S),
                reverse=True,
            )[: quota.per_minute]  # the newest per_minute, as the SQL stores count them
            wait = quota_retry_after(
                quota,
                unfinished=key.unfinished + count - 1,
                recent=len(recent) + count - 1,
                oldest_recent_at=min(recent) if recent else None,
                now=now,
            )
            if wait is not None:
                raise QuotaExceeded(
                    f"key {key.name} is at its quota "
                    f"(max_queued {quota.max_queued}, per_minute {quota.per_minute})",
                    retry_after_s=wait,
                )
        self._api_keys[key.id] = dataclasses.replace(
            key, jobs_submitted=key.jobs_submitted + count, unfinished=key.unfinished + count
        )

    def _count_out(self, owner: str | None, ended: int) -> None:
        """`ended` jobs of key `owner` ended without a transition each (a batch's canceled)."""
        key = self._api_keys.get(owner) if owner is not None else None
        if key is not None and ended:
            self._api_keys[key.id] = dataclasses.replace(key, unfinished=key.unfinished - ended)

    def _settle(self, job: Job, p: Plan, now: float) -> None:
        seconds = tenancy.run_seconds(job, p, now)
        ended = tenancy.ends(job, p)
        key = self._api_keys.get(job.owner) if job.owner is not None else None
        if key is not None and (seconds is not None or ended):
            self._api_keys[key.id] = dataclasses.replace(
                key,
                gpu_seconds=key.gpu_seconds + (seconds or 0.0),
                unfinished=key.unfinished - int(ended),
            )
        delivery = tenancy.owed_delivery(job, p, now)
        if delivery is not None:
            self._deliveries[delivery.id] = delivery

    # -- the webhook outbox ------------------------------------------------------------------

    async def claim_deliveries(
        self, holder: str, lease_s: float, *, limit: int = 10, now: float | None = None
    ) -> builtins.list[Delivery]:
        now = time.time() if now is None else now
        due = sorted(
            (
                d
                for d in self._deliveries.values()
                if d.state is DeliveryState.PENDING
                and d.next_attempt_at <= now
                and self._leases.get(d.id, ("", 0.0))[1] < now
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )[: max(0, limit)]
        for d in due:
            self._leases[d.id] = (holder, now + lease_s)
        return due

    async def record_attempt(
        self,
        delivery_id: str,
        holder: str,
        attempt: Attempt,
        *,
        next_attempt_at: float | None,
        payload: str | None = None,
    ) -> Delivery | None:
        d = self._deliveries.get(delivery_id)
        lease = self._leases.get(delivery_id)
        if d is None or lease is None or lease[0] != holder:
            return None
        del self._leases[delivery_id]
        state, delivered_at = tenancy.attempt_outcome(attempt, next_attempt_at)
        d = dataclasses.replace(
            d,
            attempts=(*d.attempts, attempt),
            state=state,
            next_attempt_at=next_attempt_at if next_attempt_at is not None else d.next_attempt_at,
            delivered_at=delivered_at,
            payload=d.payload if d.payload is not None else payload,
        )
        self._deliveries[delivery_id] = d
        return d

    async def deliveries(self, job_id: str) -> builtins.list[Delivery]:
        return sorted(
            (d for d in self._deliveries.values() if d.job_id == job_id),
            key=lambda d: (d.created_at, d.id),
        )

    async def delivery_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._deliveries.values():
            counts[d.state.value] = counts.get(d.state.value, 0) + 1
        return counts

    async def prune_deliveries(self, before: float) -> int:
        old = [
            d.id
            for d in self._deliveries.values()
            if d.state is not DeliveryState.PENDING and d.created_at < before
        ]
        for delivery_id in old:
            del self._deliveries[delivery_id]
        return len(old)


__all__ = ["MemoryTenancy"]
