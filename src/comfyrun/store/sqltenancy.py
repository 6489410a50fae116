"""The SQL stores' API keys, quotas and webhook outbox (mixed into SQLStore): written once
against named queries, like the queue itself."""

from __future__ import annotations

import builtins
import time
from typing import Any

from comfyrun.core.job import JSON, Job, NewJob
from comfyrun.core.tenancy import QUOTA_WINDOW_S, ApiKey, quota_retry_after
from comfyrun.core.webhook import Attempt, Delivery
from comfyrun.errors import Conflict, QuotaExceeded
from comfyrun.store import tenancy
from comfyrun.store.codec import dump_json
from comfyrun.store.sqldialect import SQLDialect
from comfyrun.store.transition import Plan


class SQLTenancy(SQLDialect):
    # -- API keys ----------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey) -> None:
        async with self._write() as conn:
            if await self._one(conn, "api_key", {"id": key.id}) is not None:
                raise Conflict(f"key {key.id} already exists", details={"key_id": key.id})
            await self._run(conn, "insert_api_key", tenancy.key_to_row(key))

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._read() as conn:
            row = await self._one(conn, "api_key", {"id": key_id})
        return tenancy.key_from_row(row) if row else None

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self._read() as conn:
            row = await self._one(conn, "api_key_by_hash", {"key_hash": key_hash})
        return tenancy.key_from_row(row) if row else None

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        async with self._read() as conn:
            rows = await self._all(conn, "api_keys", {})
        return [tenancy.key_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        async with self._write() as conn:
            return await self._run(conn, "revoke_api_key", {"id": key_id, "now": now}) == 1

    async def _admit(self, conn: Any, new: NewJob, now: float, *, count: int = 1) -> None:
        """Inside the enqueue's transaction: a key-owned job (and `count` - 1 more of its
        owner's: a batch's, all or none) must fit the key's quota (the key's row stays locked
        until commit, so concurrent submissions are counted one by one on every node); the
        submissions are counted, and the key's unfinished jobs."""
        if new.owner is None:
            return
        row = await self._one(conn, "lock_api_key", {"id": new.owner})
        if row is None:
            return
        key = tenancy.key_from_row(row)
        quota = key.quota
        recent, oldest = 0, None
        if quota.per_minute is not None:
            since = now - QUOTA_WINDOW_S
            params = {"owner": new.owner, "since": since, "cap": quota.per_minute}
            row = await self._one(conn, "quota_recent", params)
            recent, oldest = (int(row["n"]), row["oldest"]) if row else (0, None)
        wait = quota_retry_after(
            quota,
            unfinished=key.unfinished + count - 1,
            recent=recent + count - 1,
            oldest_recent_at=oldest,
            now=now,
        )
        if wait is not None:
            raise QuotaExceeded(
                f"key {key.name} is at its quota "
                f"(max_queued {quota.max_queued}, per_minute {quota.per_minute})",
                retry_after_s=wait,
            )
        await self._run(conn, "count_submission", {"id": new.owner, "n": count})

    async def _settle(self, conn: Any, job: Job, p: Plan, now: float) -> None:
        """Inside a transition's transaction: the key's usage and unfinished count, and the
        webhook outbox."""
        seconds = tenancy.run_seconds(job, p, now)
        ended = tenancy.ends(job, p)
        if seconds is not None or ended:
            params: JSON = {"id": job.owner, "seconds": seconds or 0.0, "ended": int(ended)}
            await self._run(conn, "settle_key", params)
        delivery = tenancy.owed_delivery(job, p, now)
        if delivery is not None:
            await self._run(conn, "insert_delivery", tenancy.delivery_to_row(delivery))

    # -- the webhook outbox ------------------------------------------------------------------

    async def claim_deliveries(
        self, holder: str, lease_s: float, *, limit: int = 10, now: float | None = None
    ) -> builtins.list[Delivery]:
        now = time.time() if now is None else now
        params = {"holder": holder, "lease_expires_at": now + lease_s, "now": now, "limit": limit}
        async with self._write() as conn:
            rows = await self._all(conn, "claim_deliveries", params)
        found = [tenancy.delivery_from_row(r) for r in rows]
        return sorted(found, key=lambda d: (d.next_attempt_at, d.id))

    async def record_attempt(
        self,
        delivery_id: str,
        holder: str,
        attempt: Attempt,
        *,
        next_attempt_at: float | None,
        payload: str | None = None,
    ) -> Delivery | None:
        state, delivered_at = tenancy.attempt_outcome(attempt, next_attempt_at)
        params: JSON = {
            "id": delivery_id,
            "holder": holder,
            "attempt": dump_json(tenancy.attempt_to_dict(attempt)),
            "state": state.value,
            "next_attempt_at": next_attempt_at,
            "delivered_at": delivered_at,
            "payload": payload,
        }
        async with self._write() as conn:
            row = await self._one(conn, "record_attempt", params)
        return tenancy.delivery_from_row(row) if row else None

    async def deliveries(self, job_id: str) -> builtins.list[Delivery]:
        async with self._read() as conn:
            rows = await self._all(conn, "deliveries_of_job", {"job_id": job_id})
        return [tenancy.delivery_from_row(r) for r in rows]

    async def delivery_counts(self) -> dict[str, int]:
        async with self._read() as conn:
            rows = await self._all(conn, "delivery_counts", {})
        return {r["state"]: int(r["n"]) for r in rows}

    async def prune_deliveries(self, before: float) -> int:
        async with self._write() as conn:
            return await self._run(conn, "prune_deliveries", {"before": before})


__all__ = ["SQLTenancy"]
