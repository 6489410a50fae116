"""The parts of the store's interface beside its jobs (store.base.JobStore takes them all):
API keys, the webhook outbox, the workers' registry, backends' node catalogs and batches."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol

from comfyrun.core.batch import Batch, NewBatch
from comfyrun.core.catalog import NodeCatalog
from comfyrun.core.job import Job, JobStatus, NewJob
from comfyrun.core.tenancy import ApiKey
from comfyrun.core.webhook import Attempt, Delivery
from comfyrun.store.records import JobPage


class KeyStore(Protocol):
    """API keys (stored as hashes) with their quotas and usage.

    A job whose `owner` is a key's id is that key's: `enqueue` checks the key's quota in its
    own transaction (raising QuotaExceeded) and counts the submission; a transition that takes
    the job off its backend adds the time it held it to the key's `gpu_seconds`."""

    async def create_api_key(self, key: ApiKey) -> None: ...

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first."""

    async def revoke_api_key(self, key_id: str, *, now: float | None = None) -> bool:
        """False if there is no such active key."""


class WebhookOutbox(Protocol):
    """The durable webhook outbox. A transition to succeeded, failed or canceled of a job with
    a webhook writes its `Delivery` in the same transaction (comfyrun.core.webhook)."""

    async def claim_deliveries(
        self, holder: str, lease_s: float, *, limit: int = 10, now: float | None = None
    ) -> builtins.list[Delivery]:
        """Due pending deliveries, leased to `holder` (no other holder gets them meanwhile)."""

    async def record_attempt(
        self,
        delivery_id: str,
        holder: str,
        attempt: Attempt,
        *,
        next_attempt_at: float | None,
        payload: str | None = None,
    ) -> Delivery | None:
        """Record an attempt and release the lease: delivered when it succeeded, else retried
        at `next_attempt_at` (None: given up). None if `holder` no longer holds the lease."""

    async def deliveries(self, job_id: str) -> builtins.list[Delivery]:
        """A job's deliveries, oldest first."""

    async def delivery_counts(self) -> dict[str, int]:
        """{state: number of deliveries}."""

    async def prune_deliveries(self, before: float) -> int:
        """Delete delivered and given-up deliveries created before `before`."""


class WorkerRegistry(Protocol):
    """Which job types the live workers serve: each worker announces its types when it
    starts and on every heartbeat, and retires when it stops; the API refuses a job of a
    type no worker seen lately serves."""

    async def announce_worker(
        self, worker_id: str, types: Sequence[str], *, now: float | None = None
    ) -> None:
        """Record (or refresh) `worker_id` as serving `types`, seen `now`."""

    async def retire_worker(self, worker_id: str) -> None: ...

    async def served_types(self, *, since: float) -> builtins.set[str]:
        """The types served by workers seen at or after `since`."""


class CatalogStore(Protocol):
    """Backends' node catalogs (what ComfyUI clients are shown before any backend is up)."""

    async def put_catalog(self, catalog: NodeCatalog) -> bool:
        """Store a backend's catalog, replacing its previous one unless that was fetched later;
        True when stored."""

    async def catalogs(self) -> builtins.list[NodeCatalog]:
        """Every stored catalog, by backend name."""

    async def catalog_stamps(self) -> dict[str, float]:
        """backend name → fetched_at of its stored catalog (cheap: no definitions read)."""

    async def delete_catalog(self, backend: str) -> bool: ...


class BatchStore(Protocol):
    """Batches: many jobs followed as one. A batch's own events (batch.created,
    batch.completed) are logged under its id: events_since / wait_for_event read them."""

    async def create_batch(
        self, batch: NewBatch, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Batch:
        """Store the batch and queue its jobs (in item order, one fair group) atomically."""

    async def get_batch(self, batch_id: str) -> Batch | None: ...

    async def open_batches(self) -> builtins.list[Batch]:
        """Batches still running or canceling, oldest first."""

    async def batch_counts(self, batch_id: str) -> dict[JobStatus, int]: ...

    async def batch_jobs(
        self, batch_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        """The batch's jobs in item order, cursor-paginated."""

    async def cancel_batch(
        self, batch_id: str, *, now: float | None = None
    ) -> tuple[Batch, builtins.list[Job]]:
        """Cancel its queued jobs at once and mark it canceling; returns the batch and its
        still-active jobs (the caller cancels those one by one). When the last job of a batch
        ends (here or in `transition`), the batch ends and logs one `batch.completed` event.
        Raises NotFound."""


__all__ = ["BatchStore", "CatalogStore", "KeyStore", "WebhookOutbox", "WorkerRegistry"]
